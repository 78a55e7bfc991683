"""Were the takeovers needed? Interaction episodes against the same policy alone on the same seeds.

For every task: how many interaction episodes had a takeover, and on how many of those seeds the policy,
evaluated alone (``apo eval --eval.seed-base <the collection's first seed>``), succeeds anyway. The
simulated person steps in after a stall of ``no_progress_steps``; a takeover on a seed the policy
finishes alone is help the robot did not need.

    apo collect --policy P --out runs/x/deploy --episodes-per-task 50 --seed 100000 --env.goal-pin
    apo eval --policy P --out runs/x/alone --env.goal-pin --eval.seed-base 1100000   # 1_000_000 + 100000
    python benchmarks/takeovers_vs_alone.py runs/x/deploy runs/x/alone --name x

``--base FOLDER`` (another policy's interaction episodes on the same seeds, e.g. the base's) adds, per
task, on how many of the takeover seeds that policy was taken over too: whether a refined policy still
fails where the base failed, or somewhere new. On those seeds it also lists how many steps after the
other collection's the first takeover came: with the same policy and another simulated person (e.g.
``--person.drop-distance``), how much earlier or later that person steps in. Beside the shared count it
gives how many seeds two independent draws with these takeover counts would share on average
(here x base / episodes): far more shared means the same start states are hard for both, about as many
means which seeds need the person is chance. With ``--base`` the evaluation folder may be left out
(``-``), e.g. on seeds no evaluation covers:

    python benchmarks/takeovers_vs_alone.py runs/x/deploy - --base runs/base/deploy --name x

Saves benchmarks/results/takeovers_vs_alone_<name>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from apo.data import load_episodes
from apo.data.storage import DatasetError
from apo.deployment.labels import takeover_steps
from apo.evaluation.report import EvalFileError, load_eval_results


def compare(episodes, alone: dict) -> dict[str, dict[str, int]]:
    """Per task: episodes, episodes with a takeover, and those of them the policy succeeds on alone."""
    out: dict[str, dict[str, int]] = {}
    for ep in episodes:
        if ep.task not in alone:
            raise ValueError(f"the evaluation has no task {ep.task}; evaluate on the collection's tasks")
        res = alone[ep.task]
        if not isinstance(res, dict) or "seeds" not in res or "successes" not in res:
            raise ValueError(f"the evaluation of {ep.task} lists no per-episode seeds and successes; "
                             "rerun it with the current `apo eval`")
        by_seed = dict(zip(res["seeds"], res["successes"]))
        if ep.seed not in by_seed:
            raise ValueError(f"seed {ep.seed} of {ep.task} was not evaluated; pass --eval.seed-base "
                             f"{min(e.seed for e in episodes)} and as many episodes as were collected")
        row = out.setdefault(ep.task, {"episodes": 0, "with_takeover": 0, "with_takeover_alone_succeeds": 0})
        row["episodes"] += 1
        if len(takeover_steps(ep.labels)):
            row["with_takeover"] += 1
            row["with_takeover_alone_succeeds"] += int(bool(by_seed[ep.seed]))
    return out


def shared_takeovers(episodes, base_episodes) -> dict[str, dict]:
    """Per task: seeds with a takeover here, in the base's episodes, and in both; for the seeds in both,
    the step of the first takeover here minus the base's (negative: the person stepped in earlier here)."""
    def first_takeovers(eps):
        return {(ep.task, ep.seed): int(steps[0]) for ep in eps if len(steps := takeover_steps(ep.labels))}
    seeds = {(ep.task, ep.seed) for ep in episodes}
    base_seeds = {(ep.task, ep.seed) for ep in base_episodes}
    if missing := sorted(seeds - base_seeds)[:3]:
        raise ValueError(f"the base's episodes lack {missing} (task, seed); collect both with the same --seed "
                         "and --episodes-per-task")
    here = first_takeovers(episodes)
    there = {k: v for k, v in first_takeovers(base_episodes).items() if k in seeds}
    both = sorted(here.keys() & there.keys())
    def count(keys, task):
        return sum(t == task for t, _ in keys)
    return {task: {"episodes": count(seeds, task),
                   "with_takeover": count(here, task),
                   "base_with_takeover": count(there, task),
                   "both": count(both, task),
                   "both_if_independent": round(count(here, task) * count(there, task) / count(seeds, task), 1),
                   "first_takeover_step_minus_base": sorted(here[k] - there[k] for k in both if k[0] == task)}
            for task in sorted({t for t, _ in seeds})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("interactions", type=Path, help="interaction episode folder (apo collect)")
    ap.add_argument("alone", help="evaluation folder or eval.json on the same seeds (apo eval); "
                    "'-' for none (only with --base)")
    ap.add_argument("--name", required=True, help="suffix of the saved JSON")
    ap.add_argument("--base", type=Path, help="another policy's interaction episodes on the same seeds: "
                    "also count the takeover seeds it was taken over on too")
    args = ap.parse_args()
    if args.alone == "-" and not args.base:
        ap.error("without an evaluation folder there is nothing to compare: pass one, or --base")
    try:
        episodes = load_episodes(args.interactions)
        rows = compare(episodes, load_eval_results(Path(args.alone))) if args.alone != "-" else {}
        shared = shared_takeovers(episodes, load_episodes(args.base)) if args.base else None
    except (DatasetError, EvalFileError, ValueError) as e:
        sys.exit(f"error: {e}")
    if rows:
        print("| task | episodes | with a takeover | of those, the policy alone succeeds |\n|---|---|---|---|")
        for task, r in rows.items():
            print(f"| {task} | {r['episodes']} | {r['with_takeover']} | {r['with_takeover_alone_succeeds']} |")
    result = {"interactions": str(args.interactions), "alone": None if args.alone == "-" else args.alone,
              "tasks": rows}
    if shared is not None:
        print(f"\n| task | takeovers here | takeovers of {args.base} | on the same seeds (independent draws: "
              "on average) | first takeover, steps after the base's (same seeds) |\n|---|---|---|---|---|")
        for task, r in shared.items():
            diffs = ", ".join(map(str, r["first_takeover_step_minus_base"]))
            print(f"| {task} | {r['with_takeover']} | {r['base_with_takeover']} | {r['both']} "
                  f"({r['both_if_independent']}) | {diffs} |")
        result.update(base=str(args.base), shared_takeovers=shared)
    out = Path(__file__).parent / "results" / f"takeovers_vs_alone_{args.name}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
