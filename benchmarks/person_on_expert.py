"""Would this simulated person take over the scripted expert itself?

A person who steps in while the expert drives would mark good steps as undesirable, so a trigger setting
is only usable where it leaves the expert alone. For each task and each ``--no-progress-steps`` value, the
scripted expert drives ``--episodes`` episodes (the interaction seeds from 1 000 000) while the default
person with that patience watches; counts the episodes it takes over and at which steps.

    python benchmarks/person_on_expert.py --no-progress-steps 40 20 10 --name patience   # ~1 min

Writes ``benchmarks/results/person_on_expert_<name>.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from apo.deployment.simulated import SimulatedPersonConfig, triggers_on_expert
from apo.envs import get_task
from apo.registry import UnknownNameError

DEV_TASKS = ["coffee-push-v3", "peg-insert-side-v3", "pick-place-v3", "shelf-place-v3"]
SEED_BASE = 1_000_000  # the first interaction seed of apo collect / apo loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=DEV_TASKS)
    parser.add_argument("--no-progress-steps", nargs="+", type=int, default=[40, 20, 10])
    parser.add_argument("--episodes", type=int, default=10, help="expert episodes per task and setting")
    parser.add_argument("--name", default="patience", help="suffix of the results file")
    args = parser.parse_args()
    try:
        for task in args.tasks:
            get_task(task)
        configs = {k: SimulatedPersonConfig(no_progress_steps=k) for k in args.no_progress_steps}
    except (UnknownNameError, ValueError) as e:
        sys.exit(f"error: {e}")
    if args.episodes < 1:
        sys.exit("error: --episodes must be >= 1")

    results: dict = {"episodes": args.episodes, "seed_base": SEED_BASE, "no_progress_steps": {}}
    print("| no_progress_steps | " + " | ".join(args.tasks) + " |")
    print("|---" * (len(args.tasks) + 1) + "|")
    for k, cfg in configs.items():
        row = {}
        for task in args.tasks:
            firsts = [triggers_on_expert(task, SEED_BASE + i, cfg) for i in range(args.episodes)]
            row[task] = {"taken_over": sum(bool(f) for f in firsts),
                         "first_triggers": [f[0] for f in firsts if f]}
        results["no_progress_steps"][str(k)] = row
        print(f"| {k} | " + " | ".join(f"{row[t]['taken_over']}/{args.episodes}" for t in args.tasks) + " |")
    out = Path(__file__).parent / "results" / f"person_on_expert_{args.name}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
