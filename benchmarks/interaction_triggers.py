"""Who needed help where: per task, the person's share of the steps, takeovers, and what triggered them.

Reads recorded interaction folders (``apo collect``, a benchmark's ``interactions/``, a loop's
``round_<r>/interactions/``) and prints one markdown table per folder: episodes, success with help,
intervention rate (person's steps / all steps of the folder, so the task rows add up to the total),
takeovers, and takeovers per trigger with the steps at which they fired.

    python benchmarks/interaction_triggers.py runs/loop_beta05_failonly/round_0/interactions [FOLDER ...]
Saves the figures to benchmarks/results/interaction_triggers.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from apo.data import load_episodes
from apo.data.episode import LABEL_HUMAN
from apo.data.storage import DatasetError
from apo.deployment.runner import episode_triggers


def folder_report(folder: str) -> dict[str, dict]:
    episodes = load_episodes(folder)
    total = sum(len(ep) for ep in episodes)
    report: dict[str, dict] = {}
    for ep in episodes:
        row = report.setdefault(ep.task, {"episodes": 0, "successes": 0, "human_steps": 0, "triggers": {}})
        row["episodes"] += 1
        row["successes"] += int(ep.success)
        row["human_steps"] += int((ep.labels == LABEL_HUMAN).sum())
        for step, name in episode_triggers(ep):
            row["triggers"].setdefault(name, []).append(step)
    for row in report.values():
        row["intervention_share"] = row["human_steps"] / max(1, total)
        row["triggers"] = {k: sorted(v) for k, v in row["triggers"].items()}
    return report


def markdown(folder: str, report: dict[str, dict]) -> str:
    lines = [f"{folder}", "", "| task | episodes | success with help | share of all steps by the person | takeovers by trigger (steps) |",
             "|---|---|---|---|---|"]
    for task, row in report.items():
        trig = "; ".join(f"{k} x{len(v)} ({', '.join(map(str, v))})" for k, v in row["triggers"].items()) or "none"
        lines.append(f"| {task} | {row['episodes']} | {row['successes']}/{row['episodes']} | "
                     f"{row['intervention_share']:.1%} | {trig} |")
    total = sum(r["intervention_share"] for r in report.values())
    lines.append(f"| all | {sum(r['episodes'] for r in report.values())} | "
                 f"{sum(r['successes'] for r in report.values())}/{sum(r['episodes'] for r in report.values())} | "
                 f"{total:.1%} | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", help="interaction episode folders")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "interaction_triggers.json"))
    args = ap.parse_args()
    results = {}
    for folder in args.folders:
        if not Path(folder).is_dir():
            raise SystemExit(f"{folder} is not a folder; give interaction episode folders (e.g. runs/bench/interactions)")
        try:
            results[folder] = folder_report(folder)
        except (DatasetError, ValueError) as err:  # no episodes, a corrupt file, a malformed trigger
            raise SystemExit(f"{folder}: {err}") from None
        print(markdown(folder, results[folder]) + "\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
