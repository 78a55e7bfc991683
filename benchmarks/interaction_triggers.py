"""Who needed help where: per task, the person's share of the steps, takeovers, and what triggered them.

Reads recorded interaction folders (``apo collect``, a benchmark's ``interactions/``, a loop's
``round_<r>/interactions/``) and prints one markdown table per folder: episodes, success with help,
intervention rate (person's steps / all steps of the folder, so the task rows add up to the total),
takeovers, and takeovers per trigger with the steps at which they fired; and how many of the person's
steps went into episodes that failed even with the help (the person held control, handed back, and the
episode still ran out). The folder's intervention rate gets a 95% bootstrap interval (episodes
resampled within each task): how far a round's rate can move by which episodes it happened to draw.

``--pool`` adds the figures of all given folders taken together (e.g. the final policies of several
training seeds, each on the same episodes): the person's steps over all their steps, with a bootstrap
interval that resamples each folder's episodes within each task.

``--against BASE`` adds, for every folder (and the pool), the relative change of its intervention rate
against BASE's, an interaction folder collected on the same env seeds (e.g. the base policy's on the
same fresh episodes), with a paired bootstrap interval (``apo.evaluation.report.paired_rate_change``):
-50% is the loop goal, halved.

``--plot PNG`` draws one stacked bar per folder: each task's share of all the folder's steps taken by the
person (the bar's height is the folder's intervention rate), with the bootstrap interval; with ``--against``
also BASE's bar and a line at half its rate (the loop goal).

``--give-up-after N`` adds what the figures would be with a person who ends an episode instead of taking
over for the (N+1)-th time. No rerun is needed: the person's triggers depend only on what happened
before them, so such an episode is the recorded one cut at the step of that trigger (and counts as failed).

    python benchmarks/interaction_triggers.py runs/loop_beta05_failonly/round_0/interactions [FOLDER ...]
Saves the figures to benchmarks/results/interaction_triggers.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from apo.data import load_episodes
from apo.data.episode import LABEL_HUMAN, LABEL_UNDESIRABLE
from apo.data.storage import DatasetError
from apo.deployment.labels import takeover_steps, unrescued_person_steps
from apo.deployment.runner import episode_triggers
from apo.evaluation.report import paired_rate_change


def bootstrap_rate(steps: dict[str, list[tuple[int, int, int]]], resamples: int = 2000, seed: int = 0) -> list[float]:
    """95% interval of sum(person's steps) / sum(steps), resampling the (person's steps, steps, env seed) of
    each group's episodes with replacement (every group, a task or a folder's task, keeps its episode count)."""
    rng = np.random.default_rng(seed)
    human, total = np.zeros(resamples), np.zeros(resamples)
    for pairs in steps.values():
        arr = np.array(pairs, dtype=float)
        pick = rng.integers(0, len(arr), size=(resamples, len(arr)))
        human += arr[pick, 0].sum(1)
        total += arr[pick, 1].sum(1)
    return np.percentile(human / total, [2.5, 97.5]).tolist()


def if_person_gave_up(episodes, after: int) -> dict:
    """Person's steps, all steps and successes had the person ended each episode at its (after+1)-th
    trigger instead of taking over again (the recorded episode cut at that trigger's step)."""
    human = total = successes = 0
    for ep in episodes:
        triggers = episode_triggers(ep)
        if len(takeover_steps(ep.labels)) and not triggers:
            raise ValueError(f"episode (task {ep.task}, seed {ep.seed}) has takeovers but no recorded triggers "
                             "(collected before triggers were saved); --give-up-after needs them: recollect it")
        end = triggers[after][0] if len(triggers) > after else len(ep)
        human += int((ep.labels[:end] == LABEL_HUMAN).sum())
        total += end
        successes += int(ep.success and end == len(ep))
    return {"human_steps": human, "steps": total, "successes": successes,
            "intervention_rate": human / max(1, total)}


def folder_report(folder: str, give_up_after: list[int] = ()) -> tuple[dict, dict[str, list[tuple[int, int, int]]]]:
    """The folder's figures, and each task's (person's steps, steps, env seed) per episode."""
    episodes = load_episodes(folder)
    total = sum(len(ep) for ep in episodes)
    tasks: dict[str, dict] = {}
    steps: dict[str, list[tuple[int, int]]] = {}
    for ep in episodes:
        row = tasks.setdefault(ep.task, {"episodes": 0, "successes": 0, "human_steps": 0,
                                         "episodes_with_help": 0, "failed_with_help": 0,
                                         "human_steps_in_failures": 0, "undesirable_steps": 0, "triggers": {}})
        human = int((ep.labels == LABEL_HUMAN).sum())
        row["episodes"] += 1
        row["successes"] += int(ep.success)
        row["human_steps"] += human
        if human:
            row["episodes_with_help"] += 1
            row["failed_with_help"] += int(not ep.success)
            row["human_steps_in_failures"] += int(unrescued_person_steps(ep.labels, ep.success).sum())
        row["undesirable_steps"] += int((ep.labels == LABEL_UNDESIRABLE).sum())
        steps.setdefault(ep.task, []).append((human, len(ep), ep.seed))
        for step, name in episode_triggers(ep):
            row["triggers"].setdefault(name, []).append(step)
    for row in tasks.values():
        row["intervention_share"] = row["human_steps"] / max(1, total)
        row["triggers"] = {k: sorted(v) for k, v in row["triggers"].items()}
    rate = sum(r["human_steps"] for r in tasks.values()) / max(1, total)
    report = {"tasks": tasks, "human_steps": sum(r["human_steps"] for r in tasks.values()), "steps": total,
              "intervention_rate": rate, "intervention_rate_ci95": bootstrap_rate(steps)}
    if give_up_after:
        report["if_person_gave_up_after"] = {str(n): if_person_gave_up(episodes, n) for n in give_up_after}
    return report, steps


def pooled_report(steps_per_folder: dict[str, dict[str, list[tuple[int, int, int]]]]) -> dict:
    """All folders taken together: sum of the person's steps over sum of the steps, bootstrap over each
    folder's episodes within each task."""
    groups = {f"{folder}/{task}": pairs for folder, steps in steps_per_folder.items() for task, pairs in steps.items()}
    human = sum(row[0] for pairs in groups.values() for row in pairs)
    total = sum(row[1] for pairs in groups.values() for row in pairs)
    return {"folders": list(steps_per_folder), "human_steps": human, "steps": total,
            "intervention_rate": human / max(1, total), "intervention_rate_ci95": bootstrap_rate(groups)}


def by_seed(folder: str, steps: dict[str, list[tuple[int, int, int]]]) -> dict[str, dict[int, tuple[int, int]]]:
    """task -> {env seed: (person's steps, steps)}, for pairing with another folder on the same seeds."""
    out: dict[str, dict[int, tuple[int, int]]] = {}
    for task, rows in steps.items():
        for human, n, seed in rows:
            if seed in out.setdefault(task, {}):
                raise ValueError(f"{folder}: two {task} episodes on env seed {seed}; --against pairs one episode per "
                                 "seed, give a folder of one collection")
            out[task][seed] = (human, n)
    return out


def change_line(name: str, change: dict) -> str:
    lo, hi = change["change_ci95"]
    return (f"{name}: intervention rate {change['baseline_rate']:.1%} -> {change['rate']:.1%}, "
            f"{change['change']:+.0%} (paired 95% CI {lo:+.0%} to {hi:+.0%}"
            + (f"; {change['undefined_resamples']} resamples without the base's person left out" if
               change["undefined_resamples"] else "") + ")")


def plot_shares(reports: dict[str, dict], path: Path, halve: float | None = None) -> Path:
    """Stacked bars of each task's share of the person's steps, one bar per folder (see the module doc)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(reports)
    tasks = sorted({t for r in reports.values() for t in r["tasks"]})
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 3, 4))
    bottom = np.zeros(len(names))
    for task in tasks:
        share = np.array([r["tasks"].get(task, {}).get("intervention_share", 0.0) for r in reports.values()])
        ax.bar(range(len(names)), share, 0.6, bottom=bottom, label=task.removesuffix("-v3"))
        bottom += share
    lo, hi = np.array([r["intervention_rate_ci95"] for r in reports.values()]).T
    ax.errorbar(range(len(names)), bottom, yerr=[bottom - lo, hi - bottom], fmt="none", ecolor="black", capsize=3)
    if halve is not None:
        ax.axhline(halve / 2, color="black", linestyle="--", linewidth=1, label="half the base's rate")
    ax.set_xticks(range(len(names)), [Path(n).name for n in names], rotation=15, fontsize=8)
    ax.set_ylabel("share of all steps by the person")
    ax.set_title("intervention rate by task (95% bootstrap interval)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _summed(rows) -> dict[str, int]:
    keys = ("human_steps", "human_steps_in_failures", "episodes_with_help", "failed_with_help")
    rows = list(rows)
    return {k: sum(r[k] for r in rows) for k in keys}


def failed_share(row: dict) -> str:
    """"<person's steps in failed episodes>/<person's steps> (<failed>/<helped> episodes)"."""
    return (f"{row['human_steps_in_failures']}/{row['human_steps']} "
            f"({row['failed_with_help']}/{row['episodes_with_help']} helped episodes failed)")


def markdown(folder: str, report: dict) -> str:
    lines = [f"{folder}", "", "| task | episodes | success with help | share of all steps by the person | undesirable steps | "
             "person's steps in episodes that failed anyway | takeovers by trigger (steps) |", "|---|---|---|---|---|---|---|"]
    tasks = report["tasks"]
    for task, row in tasks.items():
        trig = "; ".join(f"{k} x{len(v)} ({', '.join(map(str, v))})" for k, v in row["triggers"].items()) or "none"
        lines.append(f"| {task} | {row['episodes']} | {row['successes']}/{row['episodes']} | "
                     f"{row['intervention_share']:.1%} | {row['undesirable_steps']} | {failed_share(row)} | {trig} |")
    lo, hi = report["intervention_rate_ci95"]
    episodes = sum(r["episodes"] for r in tasks.values())
    lines.append(f"| all | {episodes} | {sum(r['successes'] for r in tasks.values())}/{episodes} | "
                 f"{report['intervention_rate']:.1%} (95% CI {lo:.1%}-{hi:.1%}) | "
                 f"{sum(r['undesirable_steps'] for r in tasks.values())} | "
                 f"{failed_share(_summed(tasks.values()))} | |")
    for n, row in report.get("if_person_gave_up_after", {}).items():
        lines.append(f"\nhad the person ended each episode instead of taking over after {n} takeover(s): "
                     f"intervention rate {row['intervention_rate']:.1%} ({row['human_steps']} of {row['steps']} "
                     f"steps), success with help {row['successes']}/{episodes}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", help="interaction episode folders")
    ap.add_argument("--give-up-after", type=int, nargs="*", default=[], metavar="N",
                    help="also report the figures of a person who ends an episode instead of its (N+1)-th takeover")
    ap.add_argument("--pool", action="store_true",
                    help="also report all folders taken together (e.g. several training seeds' final policies)")
    ap.add_argument("--against", metavar="BASE",
                    help="also report each folder's change of the intervention rate against this folder's, "
                         "collected on the same env seeds (paired bootstrap interval)")
    ap.add_argument("--plot", type=Path, metavar="PNG",
                    help="also save a stacked bar chart of each folder's intervention rate by task")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "interaction_triggers.json"))
    args = ap.parse_args()
    if args.pool and "pooled" in args.folders:
        raise SystemExit("--pool saves its figures under the key 'pooled': give that folder by another path (e.g. ./pooled)")
    if any(n < 0 for n in args.give_up_after):
        raise SystemExit(f"--give-up-after takes takeover counts >= 0, got {args.give_up_after}")
    results, steps = {}, {}
    for folder in args.folders:
        if not Path(folder).is_dir():
            raise SystemExit(f"{folder} is not a folder; give interaction episode folders (e.g. runs/bench/interactions)")
        try:
            results[folder], steps[folder] = folder_report(folder, args.give_up_after)
        except (DatasetError, ValueError) as err:  # no episodes, a corrupt file, a malformed trigger
            raise SystemExit(f"{folder}: {err}") from None
        print(markdown(folder, results[folder]) + "\n")
    if args.pool:
        pooled = results["pooled"] = pooled_report(steps)
        lo, hi = pooled["intervention_rate_ci95"]
        print(f"pooled over {len(steps)} folders: intervention rate {pooled['intervention_rate']:.1%} "
              f"(95% CI {lo:.1%}-{hi:.1%}), {pooled['human_steps']} of {pooled['steps']} steps by the person\n")
    base_report = None
    if args.against:
        try:
            base_report, base_steps = folder_report(args.against)
            base = by_seed(args.against, base_steps)
            runs = {folder: by_seed(folder, s) for folder, s in steps.items()}
            changes = {folder: paired_rate_change([run], base) for folder, run in runs.items()}
            if args.pool:
                changes["pooled"] = paired_rate_change(list(runs.values()), base)
        except (DatasetError, ValueError) as err:
            raise SystemExit(f"--against {args.against}: {err}") from None
        results["against"] = {"baseline": args.against, "changes": changes}
        print("\n".join(change_line(name, c) for name, c in changes.items()) + "\n")
    if args.plot:
        folders = {f: r for f, r in results.items() if f in steps}
        if base_report is not None:
            folders = {args.against: base_report, **folders}
        print(f"plot: {plot_shares(folders, args.plot, base_report and base_report['intervention_rate'])}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
