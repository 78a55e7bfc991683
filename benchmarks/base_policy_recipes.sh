#!/usr/bin/env bash
# The base-policy recipes compared in docs/base_policy.md, as they were run (2 cores, ~2 h 40 min in all).
# Usage: bash benchmarks/base_policy_recipes.sh [RUN_ROOT]   (default runs/recipes; rerun to continue)
# Every step is resumable: collection keeps recorded episodes, training resumes from its checkpoint.
set -euo pipefail
root="${1:-runs/recipes}"
export MUJOCO_GL="${MUJOCO_GL:-egl}" HF_HUB_OFFLINE=1

# A: 100 clean expert demos per task, 6k BC steps (the first recipe)
apo collect-demos --out "$root/demos_clean100" --demos.episodes-per-task 100 --demos.action-noise 0.0
apo train --data "$root/demos_clean100" --out "$root/train_A" --recipe.tokenizer bin --recipe.train.steps 6000
apo eval --policy "$root/train_A/policy" --out "$root/eval_A_chunk" --eval.execute-steps None  # whole 4-action chunks
apo eval --policy "$root/train_A/policy" --out "$root/eval_A_replan" --eval.execute-steps 1   # re-plan every step

# B: 200 demos per task with DART noise 0.2 on the executed action, 10k BC steps
apo collect-demos --out "$root/demos_noise200" --demos.episodes-per-task 200 --demos.action-noise 0.2
apo train --data "$root/demos_noise200" --out "$root/train_B" --recipe.tokenizer bin --recipe.train.steps 10000
apo eval --policy "$root/train_B/policy" --out "$root/eval_B_chunk" --eval.execute-steps None
apo eval --policy "$root/train_B/policy" --out "$root/eval_B_replan" --eval.execute-steps 1

# C, D, E: B's demonstrations with FAST tokens, 10k / 15k / 12.5k BC steps (E is the default of `apo demo`)
for run in C:10000 D:15000 E:12500; do
  apo train --data "$root/demos_noise200" --out "$root/train_${run%%:*}" --recipe.tokenizer fast --recipe.train.steps "${run##*:}"
  apo eval --policy "$root/train_${run%%:*}/policy" --out "$root/eval_${run%%:*}_replan" --eval.execute-steps 1
done

for e in A_chunk A_replan B_chunk B_replan C_replan D_replan E_replan; do
  python -c "import json,sys; r=json.load(open(sys.argv[1]))['results']; print(sys.argv[2], {k: v['success_rate'] for k, v in r.items()})" \
    "$root/eval_$e/eval.json" "$e"
done
