#!/usr/bin/env bash
# The FAST variant beside the bin one (docs/results.md, "FAST tokens"): a base policy trained with FAST
# tokens on the same demonstrations and recipe as the bin base, then one round of the benchmark
# protocol with APO (its own interaction episodes with the simulated person, the same refinement
# settings as the bin run, the same eval seeds).
#   bash benchmarks/fast_variant.sh DEMOS [OUT_ROOT] [THREADS]
# e.g. bash benchmarks/fast_variant.sh runs/exp/demos_n02 runs/fast 2
set -euo pipefail
demos="$1"; root="${2:-runs/fast}"; threads="${3:-2}"
export MUJOCO_GL="${MUJOCO_GL:-egl}" HF_HUB_OFFLINE=1 OMP_NUM_THREADS="$threads"
apo train --data "$demos" --out "$root/train" --recipe.tokenizer fast --recipe.train.threads "$threads"
apo benchmark --out "$root/bench" --benchmark.base-policy "$root/train/policy" --benchmark.demos "$demos" \
  --benchmark.objectives apo --benchmark.train-seeds 0 --benchmark.refine.demos-per-task 200 \
  --benchmark.refine.train.threads "$threads"
