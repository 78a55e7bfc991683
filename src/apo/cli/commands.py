"""The ``apo`` commands. Each is a function whose typed, documented arguments become ``--help``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from rich.console import Console

from apo.data.demos import DemoConfig
from apo.deployment.console.help import HelpConfig
from apo.deployment.console.session import ConsoleConfig
from apo.deployment.runner import DeployConfig
from apo.deployment.simulated import SimulatedPersonConfig
from apo.envs import EnvConfig
from apo.evaluation.benchmark import BenchmarkConfig
from apo.evaluation.loop import LoopConfig
from apo.evaluation import EvalConfig
from apo.tokenizers.fast import FASTConfig
from apo.training.base_policy import BaseRecipe
from apo.training.refine import RefineConfig

console = Console()


@dataclass(frozen=True)
class CollectDemosArgs:
    out: Path
    """Dataset folder to create or extend (resumable: existing episodes are kept and counted)."""
    demos: DemoConfig = field(default_factory=DemoConfig)
    env: EnvConfig = field(default_factory=EnvConfig)


def collect_demos(args: Annotated[CollectDemosArgs, tyro.conf.arg(name="")]) -> None:
    """Record scripted-expert demonstrations into an HDF5 episode folder and compute its stats."""
    from apo.data.demos import collect_demos as run

    stats = run(args.out, args.demos, args.env)
    console.print(f"[green]dataset[/green] {args.out}: {stats.num_steps} steps; stats saved to {args.out}/stats.json")


@dataclass(frozen=True)
class StatsArgs:
    data: Path
    """Dataset folder whose stats.json is (re)computed."""


def stats(args: Annotated[StatsArgs, tyro.conf.arg(name="")]) -> None:
    """Recompute a dataset's normalization statistics (stats.json)."""
    from apo.data import DatasetStats, load_episodes

    s = DatasetStats.compute(load_episodes(args.data))
    console.print(f"saved {s.save(args.data)}")


@dataclass(frozen=True)
class FitTokenizerArgs:
    data: Path
    """Dataset folder (episodes + stats.json) whose action chunks the tokenizer is fitted on."""
    out: Path | None = None
    """Tokenizer JSON to write (default: <data>/tokenizer_fast.json); train with it via --recipe.tokenizer-file."""
    horizon: int = 4
    """Actions per chunk (train with the same --recipe.horizon)."""
    fast: FASTConfig = field(default_factory=FASTConfig)


def fit_tokenizer(args: Annotated[FitTokenizerArgs, tyro.conf.arg(name="")]) -> None:
    """Fit the FAST action tokenizer (DCT + BPE) on a dataset; print its tokens per chunk next to the bin tokenizer's."""
    from apo.tokenizers import save_tokenizer
    from apo.training.base_policy import fit_tokenizer as fit

    recipe = BaseRecipe(horizon=args.horizon, tokenizer="fast", fast=args.fast)
    tok, c = fit(args.data, recipe)
    path = save_tokenizer(tok, args.out or args.data / "tokenizer_fast.json")
    console.print(
        f"[green]FAST tokenizer[/green] (vocab {tok.vocab_size}) saved to {path}\n"
        f"tokens per chunk on {c.chunks} chunks: mean {c.mean:.2f}, max {c.max} (padded to {c.padded}); "
        f"bin tokenizer: {c.bin}. Max round-trip error {c.max_error:.4f}"
    )


@dataclass(frozen=True)
class TrainArgs:
    data: Path
    """Dataset folder (from `apo collect-demos`)."""
    out: Path
    """Run folder: checkpoint.pt, metrics.jsonl, policy/ (rerun with the same folder to resume)."""
    recipe: BaseRecipe = field(default_factory=BaseRecipe)


def train(args: Annotated[TrainArgs, tyro.conf.arg(name="")]) -> None:
    """Train a base policy by behaviour cloning."""
    from apo.training.base_policy import train_base_policy

    train_base_policy(args.data, args.out, args.recipe)
    console.print(f"[green]policy saved[/green] to {args.out / 'policy'}")


@dataclass(frozen=True)
class EvalArgs:
    policy: Path
    """Saved policy folder (e.g. runs/demo/train/policy)."""
    out: Path
    """Folder for eval.json and videos/."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    env: EnvConfig = field(default_factory=EnvConfig)


def evaluate(args: Annotated[EvalArgs, tyro.conf.arg(name="")]) -> None:
    """Evaluate a saved policy: success table, eval.json, optional MP4 rollout videos."""
    from apo.evaluation import evaluate as run, success_table
    from apo.models import VLAPolicy

    policy = VLAPolicy.load(args.policy)
    results = run(policy, args.eval, args.env, args.out)
    console.print(success_table(results, f"{args.policy}"))
    console.print(f"results: {args.out / 'eval.json'}")


@dataclass(frozen=True)
class CompareArgs:
    runs: tyro.conf.Positional[tuple[str, ...]]
    """Evaluations to compare as NAME=PATH (PATH: an eval.json from `apo eval`, or its folder), e.g.
    base=runs/eval_base apo=runs/eval_apo. All must cover the same tasks and env seeds."""
    baseline: str = "base"
    """Name whose average the others are compared with (points); ignored when absent."""
    out: Path | None = None
    """Folder for compare.md and compare.png (None: print the table only)."""


def compare(args: Annotated[CompareArgs, tyro.conf.arg(name="")]) -> None:
    """Compare evaluations on the same seeds: method x task success table with Wilson 95% intervals."""
    from apo.evaluation.report import (EvalFileError, TABLE_NOTE, bar_chart, compare_evals, markdown_table,
                                       paired_note)

    named = {}
    for item in args.runs:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise EvalFileError(f"{item!r} is not NAME=PATH (e.g. apo=runs/eval_apo/eval.json)")
        named[name] = path
    table, tasks = compare_evals(named, baseline=args.baseline)
    md = markdown_table(table, tasks, baseline=args.baseline)
    if note := paired_note(table, args.baseline):
        md += f"\n\n{note}"
    print(md)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "compare.md").write_text(f"{TABLE_NOTE}\n\n{md}\n")
        (args.out / "compare.json").write_text(json.dumps({"table": table, "tasks": tasks}, indent=2))
        bar_chart(table, tasks, args.out / "compare.png")
        console.print(f"written: {args.out / 'compare.md'}, {args.out / 'compare.png'}")


@dataclass(frozen=True)
class CollectArgs:
    policy: Path
    """Saved policy folder to deploy."""
    out: Path
    """Folder for the recorded interaction episodes (resumable)."""
    tasks: tuple[str, ...] = ("coffee-push-v3", "peg-insert-side-v3", "pick-place-v3", "shelf-place-v3")
    """Tasks to deploy on."""
    episodes_per_task: int = 20
    """Interaction episodes per task."""
    source: str = "simulated"
    """Who takes over: simulated (scripted expert), keyboard or gamepad."""
    person: SimulatedPersonConfig = field(default_factory=SimulatedPersonConfig)
    """Triggers and hold of the simulated person (source=simulated)."""
    deploy: DeployConfig = field(default_factory=DeployConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    seed: int = 0
    """Offset of the interaction env seeds."""


def collect(args: Annotated[CollectArgs, tyro.conf.arg(name="")]) -> None:
    """Deploy a policy with a person in the loop; record labeled episodes (1 policy, 2 person, 0 pre-takeover)."""
    from apo.deployment import INTERVENTION_SOURCES, collect_interactions
    from apo.models import VLAPolicy

    policy = VLAPolicy.load(args.policy)
    factory = INTERVENTION_SOURCES.get(args.source)
    make = (lambda task: factory(task, args.person)) if args.source == "simulated" else factory
    summary = collect_interactions(policy, args.tasks, args.episodes_per_task, make, args.out, args.deploy, args.env, args.seed)
    console.print(f"[green]{args.out}[/green]: {summary.describe()} (summary.json)")


@dataclass(frozen=True)
class ServeArgs:
    policy: Path
    """Saved policy folder to deploy."""
    out: Path
    """Folder for the recorded interaction episodes (resumable; same format and labels as `apo collect`)."""
    tasks: tuple[str, ...] = ("pick-place-v3",)
    """Tasks to deploy on, one after the other."""
    episodes_per_task: int = 20
    """Episodes per task."""
    host: str = "127.0.0.1"
    """Address to bind. Anything but a loopback address needs a token."""
    port: int = 8000
    """Port to bind (0: any free port)."""
    token: str | None = None
    """Access token (>= 16 characters), required when host is not loopback; default: $APO_CONSOLE_TOKEN.
    Open the console at http://HOST:PORT/?token=TOKEN."""
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    ask: HelpConfig = field(default_factory=HelpConfig)
    """When the robot asks for help (a banner on the console); off unless a threshold or a budget is given."""
    deploy: DeployConfig = field(default_factory=DeployConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    seed: int = 0
    """Offset of the interaction env seeds."""


def serve(args: Annotated[ServeArgs, tyro.conf.arg(name="")]) -> None:
    """Browser console: watch the robot, take over with the keyboard, mark and replay episodes (records like `apo collect`)."""
    import os

    try:
        from apo.deployment.console.server import ConsoleServer, InsecureBindError, check_bind
    except ImportError as e:
        console.print(f"[red]error:[/red] the console needs FastAPI and uvicorn ({e}): pip install -e '.[console]'")
        raise SystemExit(2) from e
    from apo.deployment.console import ConsoleSession
    from apo.models import VLAPolicy

    token = args.token or os.environ.get("APO_CONSOLE_TOKEN") or None
    try:
        check_bind(args.host, token)  # before loading anything
    except InsecureBindError as e:
        console.print(f"[red]error:[/red] {e}")
        raise SystemExit(2) from e
    policy = VLAPolicy.load(args.policy)
    session = ConsoleSession(policy, args.out, args.tasks, args.episodes_per_task, args.deploy, args.env, args.seed,
                             args.console, args.ask)
    try:
        server = ConsoleServer(session, args.host, args.port, token, log_level="warning")
    except (InsecureBindError, OSError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise SystemExit(2) from e
    console.print(f"[green]console[/green] at {server.url}  (episodes -> {args.out}; Ctrl-C to stop)")
    server.run()
    console.print(f"recorded {len(session.episodes())} episodes in {args.out}")


@dataclass(frozen=True)
class RefineArgs:
    policy: Path
    """Base policy folder (also the frozen reference)."""
    interactions: tuple[Path, ...]
    """Interaction episode folder(s) from `apo collect`."""
    out: Path
    """Run folder: checkpoint.pt, metrics.jsonl, reference_cache.pt, policy/ (rerun to resume)."""
    demos: Path | None = None
    """Expert demonstration folder; its first `demos_per_task` episodes per task are mixed in."""
    refine: RefineConfig = field(default_factory=RefineConfig)


def refine(args: Annotated[RefineArgs, tyro.conf.arg(name="")]) -> None:
    """Refine a policy on interaction data with APO or a baseline objective (LoRA, cached reference)."""
    from apo.training.refine import refine as run

    run(args.policy, list(args.interactions), args.demos, args.out, args.refine)
    console.print(f"[green]refined policy saved[/green] to {args.out / 'policy'}")


@dataclass(frozen=True)
class AverageArgs:
    policies: tyro.conf.Positional[tuple[Path, ...]]
    """Two or more policy folders refined from the same base (e.g. the final policies of loops run with
    different training seeds)."""
    out: Path
    """Folder for the averaged policy."""


def average(args: Annotated[AverageArgs, tyro.conf.arg(name="")]) -> None:
    """Average the weights of policies refined from the same base (the mean of their merged LoRA updates)."""
    from apo.models.averaging import average_policies

    out = args.out.resolve()
    problem = None
    if len(args.policies) < 2:
        problem = f"averaging needs at least two policy folders, got {len(args.policies)}"
    elif out in {Path(p).resolve() for p in args.policies}:
        problem = f"--out {args.out} is one of the policies being averaged: choose a new folder"
    elif out.exists() and not (out / "config.json").exists():
        problem = f"--out {args.out} exists and is not a policy folder: choose a new folder (nothing was written)"
    if problem:
        console.print(f"[red]error:[/red] {problem}")
        raise SystemExit(2)
    average_policies(args.policies).save(args.out)
    console.print(f"[green]averaged {len(args.policies)} policies[/green] into {args.out}")


@dataclass(frozen=True)
class BenchmarkArgs:
    out: Path
    """Run folder (rerun to continue from the last finished stage)."""
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)


def benchmark(args: Annotated[BenchmarkArgs, tyro.conf.arg(name="")]) -> None:
    """Base policy -> interaction episodes -> refine with every objective -> evaluate all on the same seeds
    (with --benchmark.perturbation: the paper's perturbation protocol)."""
    from apo.evaluation.benchmark import run_benchmark

    run_benchmark(args.out, args.benchmark)
    console.print(f"report: {args.out / 'results.md'}, {args.out / 'success.png'}, log: {args.out / 'log.txt'}")


@dataclass(frozen=True)
class LoopArgs:
    policy: Path
    """Base policy folder (round 0)."""
    out: Path
    """Run folder (rerun to continue)."""
    demos: Path | None = None
    """Expert demonstrations mixed into every refinement."""
    loop: LoopConfig = field(default_factory=LoopConfig)


def loop(args: Annotated[LoopArgs, tyro.conf.arg(name="")]) -> None:
    """Lifelong loop: deploy -> collect with takeover -> refine -> redeploy; plots success and intervention rate."""
    from apo.evaluation.loop import run_loop

    run_loop(args.policy, args.demos, args.out, args.loop)
    console.print(f"history: {args.out / 'loop.json'}, plot: {args.out / 'loop.png'}")


@dataclass(frozen=True)
class DemoArgs:
    out: Path = Path("runs/demo")
    """Run folder; rerunning continues from the last finished stage."""
    demos: DemoConfig = field(default_factory=DemoConfig)
    recipe: BaseRecipe = field(default_factory=BaseRecipe)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(videos_per_task=2))
    env: EnvConfig = field(default_factory=EnvConfig)


def demo(args: Annotated[DemoArgs, tyro.conf.arg(name="")]) -> None:
    """The main job on the embedded default: expert demos -> base policy (BC) -> evaluation table."""
    from apo.data.demos import collect_demos as run_demos
    from apo.evaluation import evaluate as run_eval, success_table
    from apo.training.base_policy import train_base_policy

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(args), indent=2, default=str))
    t0 = time.time()
    console.rule("1/3 expert demonstrations")
    run_demos(out / "demos", args.demos, args.env)
    console.rule("2/3 base policy (behaviour cloning)")
    policy = train_base_policy(out / "demos", out / "train", args.recipe)
    console.rule("3/3 evaluation")
    results = run_eval(policy, args.eval, args.env, out / "eval")
    console.print(success_table(results, f"base policy ({time.time() - t0:.0f} s in all)"))
    console.print(f"run folder: {out} (eval/eval.json, eval/videos/, train/metrics.jsonl, train/policy/)")
