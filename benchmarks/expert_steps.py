"""How long the scripted expert (the simulated person) needs to finish each task from the start.

Runs MetaWorld's scripted expert alone on the fixed evaluation seeds (the same episodes as ``apo eval``)
and records the step of first success (or none within the task's episode length). Set beside the
person's ``hold_steps`` (20 by default), it tells whether one takeover can carry a task to its end or
only nudges it: docs/results.md, "Sixth loop".

    python benchmarks/expert_steps.py --episodes 10        # ~1 min

Writes ``benchmarks/results/expert_steps.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from apo.envs import DEV_SUITE, EnvConfig, make_env
from apo.envs.experts import ScriptedExpert
from apo.evaluation.rollout import EVAL_SEED_BASE
from apo.registry import UnknownNameError


def steps_to_success(task: str, seeds: list[int]) -> list[int | None]:
    """Per seed, the expert's step of first success (None: not within the task's episode length)."""
    env = make_env(task, EnvConfig(terminate_on_success=True))
    expert = ScriptedExpert(task)
    out: list[int | None] = []
    try:
        for seed in seeds:
            _, info = env.reset(seed=seed)
            state, steps = info["state"], None
            for t in range(1, env.max_steps + 1):
                _, _, terminated, truncated, info = env.step(expert.act(state))
                state = info["state"]
                if info["success"]:
                    steps = t
                    break
                if terminated or truncated:
                    break
            out.append(steps)
    finally:
        env.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=list(DEV_SUITE))
    ap.add_argument("--episodes", type=int, default=10, help="evaluation seeds per task")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "expert_steps.json")
    args = ap.parse_args()
    if args.episodes < 1:
        raise SystemExit("--episodes must be >= 1")
    results = {}
    print("| task | finished | steps to success: median (min-max) |\n|---|---|---|")
    seeds = [EVAL_SEED_BASE + k for k in range(args.episodes)]
    for task in args.tasks:
        try:
            steps = steps_to_success(task, seeds)
        except UnknownNameError as err:
            raise SystemExit(f"error: {err}") from None
        done = [s for s in steps if s is not None]
        results[task] = {"seeds": seeds, "steps_to_success": steps}
        spread = f"{int(np.median(done))} ({min(done)}-{max(done)})" if done else "-"
        print(f"| {task} | {len(done)}/{len(steps)} | {spread} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
