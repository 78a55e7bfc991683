"""Result tables (markdown + JSON) and bar charts of success rates per method and task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (float(max(0.0, c - h)), float(min(1.0, c + h)))


def paired_sign_test(results: dict, baseline: dict, tasks: list[str]) -> dict:
    """Episode by episode against a baseline evaluated on the same env seeds (eval.json ``results``):
    episodes ``won`` (success where the baseline failed), ``lost``, and the two-sided exact sign-test
    (McNemar) p-value of won vs lost. Pairing removes the luck of the draw of start states."""
    from scipy.stats import binomtest

    won = lost = 0
    for t in tasks:
        base = dict(zip(baseline[t]["seeds"], baseline[t]["successes"]))
        for seed, ok in zip(results[t]["seeds"], results[t]["successes"]):
            if seed not in base:
                raise ValueError(f"{t}: env seed {seed} was not evaluated for the baseline; evaluate both on the "
                                 "same seeds (--eval.seed-base, --eval.episodes)")
            won += bool(ok) and not base[seed]
            lost += bool(base[seed]) and not ok
    p = binomtest(won, won + lost).pvalue if won + lost else 1.0
    return {"won": won, "lost": lost, "p_value": float(p)}


def paired_rate_change(policies: list[dict], baseline: dict, resamples: int = 2000, seed: int = 0) -> dict:
    """Relative change of the intervention rate against a baseline run on the same env seeds.

    ``baseline`` and every entry of ``policies`` (e.g. one per training seed) map task -> {env seed:
    (person's steps, steps)} of one interaction episode per seed. The rate is sum(person's steps) /
    sum(steps) (the policies pooled); ``change`` = rate / baseline rate - 1 (-0.5: halved). The 95%
    interval resamples each task's env seeds with replacement, the same draw for the baseline and every
    policy, so the luck of which start states were drawn cancels out of the ratio. Resamples whose
    baseline drew no person's steps have no relative change: they are left out of the interval and
    counted in ``undefined_resamples``."""
    if not policies:
        raise ValueError("no policy runs to compare with the baseline")
    tasks = sorted(baseline)
    seeds = {t: sorted(baseline[t]) for t in tasks}
    for i, policy in enumerate(policies):
        for t in sorted(set(tasks) | set(policy)):
            unpaired = set(seeds.get(t, ())) ^ set(policy.get(t, {}))
            if unpaired:
                raise ValueError(f"policy {i}, {t}: env seeds {sorted(unpaired)[:5]} are not in both runs; collect "
                                 "both on the same seeds (--seed, --episodes-per-task, --tasks)")
    if not sum(h for t in tasks for h, _ in baseline[t].values()):
        raise ValueError("the baseline run has no person's steps: a relative change of its rate is undefined")
    # (runs, tasks' episodes, 2): run 0 is the baseline
    arrays = {t: np.array([[run[t][s] for s in seeds[t]] for run in [baseline, *policies]], dtype=float)
              for t in tasks}

    def change(sums: np.ndarray) -> np.ndarray:  # sums (..., runs, 2) -> pooled policies' rate / baseline's - 1
        base = sums[..., 0, 0] / sums[..., 0, 1]
        return (sums[..., 1:, 0].sum(-1) / sums[..., 1:, 1].sum(-1)) / base - 1

    sums = sum(a.sum(1) for a in arrays.values())
    rng = np.random.default_rng(seed)
    boot = sum(a[:, rng.integers(0, a.shape[1], size=(resamples, a.shape[1]))].sum(2).transpose(1, 0, 2)
               for a in arrays.values())
    with np.errstate(divide="ignore", invalid="ignore"):
        boot_change = change(boot)
    defined = np.isfinite(boot_change)  # a resample whose baseline needed no person has no relative change
    ci = np.percentile(boot_change[defined], [2.5, 97.5]).tolist() if defined.any() else [float("nan")] * 2
    return {"baseline_rate": float(sums[0, 0] / sums[0, 1]), "rate": float(sums[1:, 0].sum() / sums[1:, 1].sum()),
            "change": float(change(sums)), "change_ci95": ci, "undefined_resamples": int((~defined).sum())}


def method_table(runs: dict[str, list[dict]], tasks: list[str], baseline: str | None = "base") -> dict:
    """``runs[method]`` is a list (one per training seed) of eval.json ``results`` dicts.
    Returns per method and task the pooled success rate, its Wilson 95% CI and the per-seed rates; with a
    single-seed ``baseline`` among the runs and env seeds recorded, also the other methods' per-seed
    ``paired_sign_test`` against it (``average.paired``)."""
    table: dict = {}
    for method, seed_results in runs.items():
        row: dict = {}
        for task in tasks:
            succ = [s for r in seed_results for s in r[task]["successes"]]
            per_seed = [r[task]["success_rate"] for r in seed_results]
            row[task] = {"success_rate": float(np.mean(succ)), "ci95": wilson(int(np.sum(succ)), len(succ)),
                         "per_seed": per_seed, "episodes": len(succ)}
        per_seed_avg = [float(np.mean([r[t]["success_rate"] for t in tasks])) for r in seed_results]
        row["average"] = {"success_rate": float(np.mean([row[t]["success_rate"] for t in tasks])),
                          "per_seed": per_seed_avg}
        table[method] = row
    base = runs.get(baseline, [])
    with_seeds = all("seeds" in r[t] for rs in runs.values() for r in rs for t in tasks)
    if len(base) == 1 and with_seeds:
        for method, seed_results in runs.items():
            if method != baseline:
                table[method]["average"]["paired"] = [paired_sign_test(r, base[0], tasks) for r in seed_results]
    return table


def paired_note(table: dict, baseline: str = "base") -> str:
    """One markdown line: each method's episodes won / lost against the baseline, per training seed."""
    parts = []
    for method, row in table.items():
        tests = row["average"].get("paired")
        if tests:
            per_seed = ", ".join(f"+{p['won']}/-{p['lost']} (p = {p['p_value']:.2g})" for p in tests)
            parts.append(f"{method} {per_seed}")
    if not parts:
        return ""
    return (f"Paired with {baseline} on the same episodes (won/lost, two-sided exact sign test; one entry per "
            f"training seed): " + "; ".join(parts) + ".")


def markdown_table(table: dict, tasks: list[str], baseline: str | None = "base") -> str:
    short = [t.removesuffix("-v3") for t in tasks]
    lines = ["| method | " + " | ".join(short) + " | average |", "|---" * (len(tasks) + 2) + "|"]
    for method, row in table.items():
        cells = []
        for t in tasks:
            lo, hi = row[t]["ci95"]
            cells.append(f"{row[t]['success_rate']:.0%} ({lo:.0%}-{hi:.0%})")
        avg = row["average"]["success_rate"]
        per_seed = row["average"].get("per_seed", [])
        spread = f" ± {np.std(per_seed, ddof=1) * 100:.1f}" if len(per_seed) > 1 else ""
        delta = ""
        if baseline in table and method != baseline:
            delta = f" ({(avg - table[baseline]['average']['success_rate']) * 100:+.1f} pt)"
        name = f"**{method}**" if method == "apo" else method
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {avg:.1%}{spread}{delta} |")
    return "\n".join(lines)


TABLE_NOTE = ("Cells: success rate over every evaluation episode of every training seed, with its Wilson 95% "
              "interval. Average: mean over the tasks, ± the standard deviation over training seeds when there "
              "are several, and the difference to the base policy in points.")


def write_settings_report(settings: dict[str, tuple[dict, list[str]]], out: Path, title: str,
                          extra: dict | None = None, descriptions: dict[str, str] | None = None) -> str:
    """One table and one bar chart per evaluation setting (e.g. ``perturbed`` and ``original``).

    Writes ``results.md`` (a section per setting), ``results.json`` (``tables`` and ``tasks`` per
    setting; ``table`` is the first setting's table) and ``success.png`` for the first setting,
    ``success_<setting>.png`` for the others. Returns the markdown."""
    if not settings:
        raise ValueError("no evaluation setting to report")
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"# {title}", TABLE_NOTE]
    for i, (name, (table, tasks)) in enumerate(settings.items()):
        about = (descriptions or {}).get(name)
        parts.append(f"## {name}" + (f"\n\n{about}" if about else "") + f"\n\n{markdown_table(table, tasks)}")
        if note := paired_note(table):
            parts.append(note)
        chart = out / ("success.png" if i == 0 else f"success_{name}.png")
        bar_chart(table, tasks, chart, f"{title}: {name}" if len(settings) > 1 else title)
    md = "\n\n".join(parts) + "\n"
    (out / "results.md").write_text(md)
    first = next(iter(settings.values()))[0]
    payload = {"table": first, "tables": {k: t for k, (t, _) in settings.items()},
               "tasks": {k: list(ts) for k, (_, ts) in settings.items()}, **(extra or {})}
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    return md


def bar_chart(table: dict, tasks: list[str], path: Path, title: str = "success rate") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(table)
    cols = tasks + ["average"]
    x = np.arange(len(cols))
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(1.6 * len(cols) + 2, 4))
    for i, m in enumerate(methods):
        vals = [table[m][c]["success_rate"] for c in cols]
        err = None
        if all("ci95" in table[m][c] for c in tasks):
            lo = [table[m][c]["success_rate"] - table[m][c]["ci95"][0] for c in tasks] + [0]
            hi = [table[m][c]["ci95"][1] - table[m][c]["success_rate"] for c in tasks] + [0]
            err = [lo, hi]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, vals, width, label=m, yerr=err, capsize=2)
    ax.set_xticks(x, [c.removesuffix("-v3") for c in cols], rotation=15)
    ax.set_ylim(0, 1)
    ax.set_ylabel("success rate")
    ax.set_title(title)
    ax.legend(ncol=min(4, len(methods)), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


class EvalFileError(ValueError):
    """An eval.json that cannot be compared (missing, corrupt, or evaluated on other tasks or seeds)."""


def load_eval_results(path: str | Path) -> dict:
    """The ``results`` dict of an ``apo eval`` output (a folder holding eval.json, or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "eval.json"
    if not path.exists():
        raise EvalFileError(f"{path} does not exist: give an eval.json written by `apo eval` (or its folder)")
    try:
        results = json.loads(path.read_text())["results"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise EvalFileError(f"{path} is not an eval.json written by `apo eval` ({e}); rerun the evaluation") from e
    return results


def compare_evals(named: dict[str, str | Path], baseline: str | None = "base") -> tuple[dict, list[str]]:
    """One method x task table (``method_table``) from several evaluations of the same tasks and seeds.

    Success rates are only comparable on the same episodes, so every evaluation must cover the same
    tasks with the same env seeds; otherwise ``EvalFileError`` says which one differs."""
    if not named:
        raise EvalFileError("nothing to compare: give NAME=PATH pairs")
    loaded = {name: load_eval_results(path) for name, path in named.items()}
    first_name, first = next(iter(loaded.items()))
    tasks = [t for t in first if t != "average"]
    for name, results in loaded.items():
        other = [t for t in results if t != "average"]
        if sorted(other) != sorted(tasks):
            raise EvalFileError(f"{name} was evaluated on {other}, {first_name} on {tasks}: compare the same tasks")
        for t in tasks:
            if results[t].get("seeds") != first[t].get("seeds"):
                raise EvalFileError(f"{name} and {first_name} used different env seeds on {t}: evaluate both with "
                                    "the same --eval.seed-base and --eval.episodes")
    return method_table({name: [r] for name, r in loaded.items()}, tasks, baseline), tasks
