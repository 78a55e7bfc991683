#!/usr/bin/env bash
# `apo benchmark` on a 2-core machine with two single-thread workers (two 1-thread jobs get more done than
# one 2-thread job). Worker A runs the shared stages (base evaluation, interaction episodes), then the
# objectives that read the reference (apo kto dpo, which share its cached log-probs); worker B starts once
# the interactions are recorded and runs the behaviour-cloning family (hg-dagger iwr sirius). A last pass
# over every objective finds all stages done and writes the report. Rerun the same command to continue.
#   bash benchmarks/parallel_benchmark.sh OUT [apo benchmark options...]
# e.g. bash benchmarks/parallel_benchmark.sh runs/bench_fast15k --benchmark.base-policy runs/fast15k/train/policy \
#        --benchmark.demos runs/exp/demos_n02 --benchmark.train-seeds 0 --benchmark.refine.demos-per-task 200
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: bash benchmarks/parallel_benchmark.sh OUT [apo benchmark options...]" >&2; exit 2; }
out="$1"; shift
export MUJOCO_GL="${MUJOCO_GL:-egl}" HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
mkdir -p "$out"
one() { apo benchmark --out "$out" "$@" --benchmark.refine.train.threads 1; }
one "$@" --benchmark.objectives apo kto dpo > "$out/worker_a.log" 2>&1 &
a=$!
# worker B must not collect the same interaction episodes at the same time
until grep -q "interactions: " "$out/worker_a.log" 2>/dev/null; do
  kill -0 "$a" 2>/dev/null || { echo "worker A stopped early; see $out/worker_a.log" >&2; exit 1; }
  sleep 10
done
one "$@" --benchmark.objectives hg-dagger iwr sirius > "$out/worker_b.log" 2>&1 &
b=$!
wait "$a"; wait "$b"
one "$@"
