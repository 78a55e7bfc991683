"""Helpers shared by the benchmark scripts (timing, machine info, default policy, rich report, JSON).

The scripts are run as ``python benchmarks/bench_<name>.py``, which puts this folder on
``sys.path``, so they import this module as ``_common``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from dataclasses import asdict
from typing import Callable

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from apo.data import DatasetStats
from apo.envs import ACTION_DIM, PROPRIO_DIM
from apo.models import VLAPolicy
from apo.training.base_policy import BaseRecipe, build_policy

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MODEL_IMAGE_SIZE = 64
REPORT_WIDTH = 120


# ----- timing -----

def summarize(seconds: list[float]) -> dict[str, float]:
    """Mean / median / p90 of per-call durations, in milliseconds."""
    ms = np.asarray(seconds) * 1e3
    return {"n": len(ms), "mean_ms": float(ms.mean()), "median_ms": float(np.median(ms)),
            "p90_ms": float(np.percentile(ms, 90))}


def time_calls(fn: Callable[[], object], n: int, warmup: int) -> dict[str, float]:
    """Call ``fn`` ``warmup`` times untimed, then ``n`` times timed."""
    for _ in range(warmup):
        fn()
    durations = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        durations.append(time.perf_counter() - t0)
    return summarize(durations)


def per_second(stats: dict[str, float], items: int = 1) -> float:
    """Throughput from the mean duration of a call that processes ``items`` items."""
    return items / (stats["mean_ms"] / 1e3)


def interleaved(cases: dict[str, Callable[[int], object]], reps: int, warmup: int,
                on_rep: Callable[[int], None] | None = None) -> dict[str, list[object]]:
    """Run every case once per repetition, in a fixed order (a, b, c, a, b, c, ...), so slow drifts
    of the background load hit all cases alike. ``case(rep)`` returns its own measurement; the
    first ``warmup`` repetitions are discarded."""
    out: dict[str, list[object]] = {name: [] for name in cases}
    for rep in range(warmup + reps):
        for name, case in cases.items():
            result = case(rep)
            if rep >= warmup:
                out[name].append(result)
        if on_rep is not None:
            on_rep(rep)
    return out


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over repetitions of num[i] / den[i] (both measured in the same repetition)."""
    return float(np.median(np.asarray(num) / np.asarray(den)))


# ----- machine -----

def machine_info() -> dict[str, object]:
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "mujoco": version("mujoco"),
        "metaworld": version("metaworld"),
        "mujoco_gl": os.environ.get("MUJOCO_GL"),
        "lp_num_threads": os.environ.get("LP_NUM_THREADS"),
        "load_avg_1_5_15": load_avg(),
    }


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (None where there is none): float results can differ by CPU."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ----- model -----

def synthetic_stats() -> DatasetStats:
    return DatasetStats(action_q01=[-1.0] * ACTION_DIM, action_q99=[1.0] * ACTION_DIM,
                        proprio_mean=[0.0] * PROPRIO_DIM, proprio_std=[1.0] * PROPRIO_DIM, num_steps=1)


def build_base_policy(horizon: int, image_size: int = MODEL_IMAGE_SIZE) -> VLAPolicy:
    """The base policy (untrained) with the bin tokenizer, built by ``build_policy`` from synthetic stats.
    Bins give every chunk the same token count, so timings do not depend on a fitted FAST vocabulary (and
    FAST would need demonstrations to fit on); the figures in docs/benchmarks.md are for bins."""
    with tempfile.TemporaryDirectory() as data_dir:
        synthetic_stats().save(data_dir)
        return build_policy(data_dir, BaseRecipe(horizon=horizon, tokenizer="bin"), image_size)


# ----- report -----

def make_console() -> Console:
    console = Console()
    if not console.is_terminal:  # piped / redirected: do not squeeze the tables into 80 columns
        console = Console(width=REPORT_WIDTH)
    return console


def table(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*r)
    return t


def print_machine(results: dict[str, object], console: Console) -> None:
    m = results["machine"]
    end = f" -> {results['load_avg_end']}" if "load_avg_end" in results else ""
    console.print(f"[bold]{m['date']}[/] {m['platform']} | {m['cpu_count']} CPUs, torch {m['torch']} "
                  f"({m['torch_threads']} threads), mujoco {m['mujoco']} | load avg {m['load_avg_1_5_15']}{end}"
                  f"{' | QUICK' if results['quick'] else ''}")


def save_results(results: dict[str, object], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


def run_script(doc: str, default_out: Path, threads: int, quick, full,
               measure: Callable[[object, Console, argparse.Namespace], dict[str, object]],
               render: Callable[[dict[str, object], Console], None],
               add_args: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """The shared ``main`` of the budgeted scripts: parse ``--quick/--out/--threads`` (plus ``add_args``),
    run ``measure(budget, console, args)`` (its sections are merged into the results), then save the
    JSON with the machine info and load average and print the report."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test with a small budget (~1 min)")
    parser.add_argument("--out", type=Path, default=default_out, help="JSON output path")
    parser.add_argument("--threads", type=int, default=threads, help="torch CPU threads")
    if add_args is not None:
        add_args(parser)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    budget = quick if args.quick else full
    console = make_console()
    t0 = time.perf_counter()
    results: dict[str, object] = {"machine": machine_info(), "quick": args.quick, "budget": asdict(budget)}
    results.update(measure(budget, console, args))
    results["load_avg_end"] = load_avg()
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    save_results(results, args.out)
    render(results, console)
    console.print(f"wrote {args.out} ({results['wall_s']} s)")
