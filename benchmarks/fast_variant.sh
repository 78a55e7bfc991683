#!/usr/bin/env bash
# The FAST variant beside the bin one (docs/results.md, "FAST tokens"): a base policy trained with FAST
# tokens on the same demonstrations and recipe as the bin base, then one round of the benchmark
# protocol with APO (its own interaction episodes with the simulated person, the same refinement
# settings as the bin run, the same eval seeds), then APO with the BC anchor and the BC-only control.
#   bash benchmarks/fast_variant.sh DEMOS [OUT_ROOT] [THREADS]
# e.g. bash benchmarks/fast_variant.sh runs/exp/demos_n02 runs/fast 2
set -euo pipefail
demos="$1"; root="${2:-runs/fast}"; threads="${3:-2}"
export MUJOCO_GL="${MUJOCO_GL:-egl}" HF_HUB_OFFLINE=1 OMP_NUM_THREADS="$threads"
apo train --data "$demos" --out "$root/train" --recipe.tokenizer fast --recipe.train.steps 10000 --recipe.train.threads "$threads"
apo benchmark --out "$root/bench" --benchmark.base-policy "$root/train/policy" --benchmark.demos "$demos" \
  --benchmark.objectives apo --benchmark.train-seeds 0 --benchmark.refine.demos-per-task 200 \
  --benchmark.refine.train.threads "$threads" --benchmark.refine.beta 0.1 \
  --benchmark.person.divergence-steps 6 --benchmark.person.progress-distance 0   # beta 0.1 and that person: the defaults then
# the anchored APO and the BC-only control of the recipe sweep, on the FAST base and its interactions
run() {
  local name="$1"; shift
  apo refine --policy "$root/train/policy" --interactions "$root/bench/interactions" --demos "$demos" \
    --out "$root/$name" --refine.train.threads "$threads" --refine.demos-per-task 200 "$@"
  apo eval --policy "$root/$name/policy" --out "$root/eval_$name"
}
run apo_anchor1 --refine.objective apo --refine.anchor-weight 1.0 --refine.beta 0.1
run bc_demos --refine.objective hg-dagger \
  --refine.shares.desirable 1 --refine.shares.correction 0 --refine.shares.undesirable 0
apo compare fast_base="$root/bench/eval/base.json" fast_apo="$root/bench/eval/apo_s0.json" \
  fast_apo_anchor1="$root/eval_apo_anchor1" fast_bc_demos="$root/eval_bc_demos" --baseline fast_base --out "$root/compare"
