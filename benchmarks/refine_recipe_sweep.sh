#!/usr/bin/env bash
# Refinement recipes tried to stop the forgetting every method showed in the first benchmark
# (docs/results.md, "Finding a refinement recipe"). Each variant refines the base policy on the
# interaction episodes of a finished benchmark run and is evaluated on the whole development suite
# (50 episodes per task, the fixed eval seeds). Two variants run side by side with one thread each.
#   bash benchmarks/refine_recipe_sweep.sh BENCH_RUN BASE_POLICY DEMOS [OUT_ROOT [VARIANTS_FILE]]
# e.g. bash benchmarks/refine_recipe_sweep.sh runs/bench runs/demo/train/policy runs/demo/demos
# VARIANTS_FILE replaces the built-in list below: one "name:apo refine options" per line (# comments),
# e.g. benchmarks/variants/apo_fast15k.txt. JOBS=1 runs one variant at a time (default 2, side by side).
# The benchmark's cached reference log-probs (BENCH_RUN/refine/reference_s0.pt) are reused when they
# match the variant's data (`apo refine` checks the tokens and scores them again otherwise).
# Ends with `apo compare`: the base and every variant, per task with Wilson intervals (OUT_ROOT/compare.md).
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: bash benchmarks/refine_recipe_sweep.sh BENCH_RUN BASE_POLICY DEMOS [OUT_ROOT [VARIANTS_FILE]]" >&2; exit 2; }
bench="$1"; base="$2"; demos="$3"; root="${4:-runs/refine_sweep}"; variants_file="${5:-}"; jobs="${JOBS:-2}"
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "JOBS must be a positive integer, got '$jobs'" >&2; exit 2; }
export MUJOCO_GL="${MUJOCO_GL:-egl}" HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
# (measured with beta 0.1, the default then: the preference variants pin it)
variants=(
  "hgd_d200:--refine.objective hg-dagger --refine.demos-per-task 200"
  "apo_d200:--refine.objective apo --refine.demos-per-task 200 --refine.beta 0.1"
  "hgd_d200_lr3e-5:--refine.objective hg-dagger --refine.demos-per-task 200 --refine.train.lr 3e-5"
  "apo_d200_lr3e-5:--refine.objective apo --refine.demos-per-task 200 --refine.train.lr 3e-5 --refine.beta 0.1"
  # controls: behaviour cloning on the base's own demonstrations only (no interaction data), and
  # HG-DAgger with the base's image augmentation
  "bc_demos_lr3e-5:--refine.objective hg-dagger --refine.demos-per-task 200 --refine.train.lr 3e-5 --refine.shares.desirable 1 --refine.shares.correction 0 --refine.shares.undesirable 0"
  "hgd_d200_aug:--refine.objective hg-dagger --refine.demos-per-task 200 --refine.train.shift-pad 4"
  # the same control at the refinement lr, and APO / KTO with a behaviour-cloning anchor on the demos
  "bc_demos:--refine.objective hg-dagger --refine.demos-per-task 200 --refine.shares.desirable 1 --refine.shares.correction 0 --refine.shares.undesirable 0"
  "apo_anchor1:--refine.objective apo --refine.demos-per-task 200 --refine.anchor-weight 1.0 --refine.beta 0.1"
  "kto_anchor1:--refine.objective kto --refine.demos-per-task 200 --refine.anchor-weight 1.0 --refine.beta 0.1"
)
if [ -n "$variants_file" ]; then
  [ -f "$variants_file" ] || { echo "variants file $variants_file does not exist" >&2; exit 2; }
  mapfile -t variants < <(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$variants_file")
  [ ${#variants[@]} -gt 0 ] || { echo "$variants_file lists no variant (one 'name:apo refine options' per line)" >&2; exit 2; }
  for v in "${variants[@]}"; do
    [[ "$v" == *:* ]] || { echo "$variants_file: '$v' is not 'name:apo refine options'" >&2; exit 2; }
  done
fi
mkdir -p "$root"

run_variant() {
  local name="$1" args="$2"
  mkdir -p "$root/$name"
  if [ -f "$bench/refine/reference_s0.pt" ] && [ ! -f "$root/$name/reference_cache.pt" ]; then
    cp "$bench/refine/reference_s0.pt" "$root/$name/reference_cache.pt"
  fi
  # shellcheck disable=SC2086  # $args holds several words on purpose
  apo refine --policy "$base" --interactions "$bench/interactions" --demos "$demos" --out "$root/$name" \
    --refine.train.threads 1 $args > "$root/$name.log" 2>&1
  [ -f "$root/eval_$name/eval.json" ] ||   # a finished variant is not evaluated again
    apo eval --policy "$root/$name/policy" --out "$root/eval_$name" >> "$root/$name.log" 2>&1
}

pairs=("base=$bench/eval/base.json")
for ((i = 0; i < ${#variants[@]}; i += jobs)); do
  for v in "${variants[@]:i:jobs}"; do
    run_variant "${v%%:*}" "${v#*:}" &
  done
  wait
done
for v in "${variants[@]}"; do pairs+=("${v%%:*}=$root/eval_${v%%:*}"); done
apo compare "${pairs[@]}" --out "$root"    # table with Wilson intervals: OUT_ROOT/compare.md, compare.png
