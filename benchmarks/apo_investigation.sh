#!/usr/bin/env bash
# APO settings tried after the default refinement fell below the base policy (docs/results.md).
# Needs a finished benchmark run folder (its interaction episodes) and the base policy + demos it used:
#   bash benchmarks/apo_investigation.sh BENCH_RUN BASE_POLICY DEMOS [OUT_ROOT]
# e.g. bash benchmarks/apo_investigation.sh runs/bench runs/demo/train/policy runs/demo/demos
# Each variant changes one setting of `apo refine` and is evaluated on coffee-push and peg-insert-side
# (the tasks where the base policy succeeds often enough to show a drop), 50 episodes each.
set -euo pipefail
bench="$1"; base="$2"; demos="$3"; root="${4:-runs/apo_investigation}"
export MUJOCO_GL="${MUJOCO_GL:-egl}" HF_HUB_OFFLINE=1
variants=(
  "lr2e-5:--refine.train.lr 2e-5 --refine.beta 0.1"     # beta 0.1 was the default then
  "beta1:--refine.beta 1.0"
)
for v in "${variants[@]}"; do
  name="${v%%:*}"; args="${v#*:}"
  # shellcheck disable=SC2086  # $args holds several words on purpose
  apo refine --policy "$base" --interactions "$bench/interactions" --demos "$demos" --out "$root/apo_$name" $args
  apo eval --policy "$root/apo_$name/policy" --out "$root/eval_apo_$name" --eval.tasks coffee-push-v3 peg-insert-side-v3
done
