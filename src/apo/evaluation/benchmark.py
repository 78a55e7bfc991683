"""``apo benchmark``: the paper's protocol, one resumable command.

Stages (each skipped when its output exists, so a killed run continues where it stopped):
1. expert demonstrations (``demos/``) and the base policy by BC (``base/policy``), unless given;
   with a given base policy and no demonstrations, ``refine.demos_per_task`` demonstrations per task
   are collected for refinement;
2. the base policy evaluated on the eval seeds (``eval/base.json``);
3. interaction episodes with the simulated person (``interactions/``), and videos of a few of them
   with the person's steps framed in red (``videos/interactions/``);
4. for every training seed and objective: refinement (``refine/<objective>_s<seed>/policy``) and
   evaluation on the same eval seeds (``eval/<objective>_s<seed>.json``);
5. a table per evaluation setting (``results.md``, ``results.json``) and bar charts (``success*.png``).

With ``perturbation`` (e.g. ``texture``) this is the paper's perturbation protocol: the interaction
episodes are collected in the perturbed setting (``<task>+<perturbation>``), refinement mixes in
``refine.demos_per_task`` expert demonstrations of the original tasks, and every policy is evaluated
in both the perturbed and the original setting (the latter shows forgetting).

``config.json`` records the settings; continuing a run folder with other settings is refused
(except the objectives, the training seeds and the video options, which only add stages).
``log.txt`` has a timestamped line per stage; training stages log to their own ``metrics.jsonl``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console

from apo.data.demos import DemoConfig, collect_demos
from apo.data.storage import DatasetError
from apo.deployment import DeployConfig, SimulatedPerson, SimulatedPersonConfig, collect_interactions
from apo.envs import DEV_SUITE, EnvConfig
from apo.envs.perturbations import parse_perturbation
from apo.evaluation.protocol import (
    ORIGINAL, PERTURBED, RunLog, all_tasks, check_and_save_config, evaluate_once, evaluation_settings,
    setting_success, write_interaction_videos,
)
from apo.evaluation.report import method_table, write_settings_report
from apo.evaluation.rollout import EvalConfig
from apo.models import VLAPolicy
from apo.objectives import OBJECTIVES
from apo.training.base_policy import BaseRecipe, train_base_policy
from apo.training.refine import RefineConfig, refine

console = Console()

ALL_OBJECTIVES = ("apo", "kto", "dpo", "hg-dagger", "iwr", "sirius")

RESUMABLE_CHANGES = (
    "objectives", "train_seeds", "videos_per_outcome", "video_methods", "eval.parallel_envs",
    "eval.videos_per_task", "eval.videos_per_outcome", "recipe.train.threads", "recipe.train.log_every",
    "recipe.train.checkpoint_every", "refine.train.threads", "refine.train.log_every",
    "refine.train.checkpoint_every",
)
"""Settings a run folder may be continued with after a change (they add stages or only change speed/logs)."""


@dataclass(frozen=True)
class BenchmarkConfig:
    tasks: tuple[str, ...] = DEV_SUITE
    """Tasks of the suite (original tasks; see perturbation)."""
    perturbation: str | None = None
    """Run the paper's perturbation protocol under this registered perturbation (position, background,
    texture, lighting, or several joined by '+', e.g. position+lighting): interaction episodes in the
    perturbed setting, refinement with expert demos of the original tasks, evaluation on both settings.
    None: everything on the original tasks."""
    objectives: tuple[str, ...] = ALL_OBJECTIVES
    """Refinement objectives compared (all on the same base, data and eval seeds)."""
    base_policy: Path | None = None
    """Existing base policy folder (None: collect demos and train one in the run folder)."""
    demos: Path | None = None
    """Existing expert demonstration folder of the original tasks (None: collect into the run folder)."""
    demo: DemoConfig = field(default_factory=DemoConfig)
    """Demonstrations for the base policy (when no base policy is given)."""
    recipe: BaseRecipe = field(default_factory=BaseRecipe)
    """Base policy recipe (when no base policy is given)."""
    interaction_episodes: int = 20
    """Interaction episodes per task collected with the simulated person (the paper: 20)."""
    person: SimulatedPersonConfig = field(default_factory=SimulatedPersonConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    train_seeds: tuple[int, ...] = (0, 1, 2)
    """Refinement seeds per objective (results pool their episodes; per-seed rates are kept)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation (its tasks are set from tasks and perturbation)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    videos_per_outcome: int = 1
    """Rollout videos per task and outcome (success, failure) of the evaluations of video_methods, and of
    the interaction episodes (person's steps framed in red). 0: no videos."""
    video_methods: tuple[str, ...] = ("base", "apo")
    """Methods whose evaluation (first training seed) records videos."""

    def __post_init__(self) -> None:
        if not self.tasks or not self.objectives or not self.train_seeds:
            raise ValueError("tasks, objectives and train_seeds must not be empty")
        for objective in self.objectives:
            OBJECTIVES.get(objective)  # unknown names fail here, listing the valid ones
        if len(set(self.train_seeds)) != len(self.train_seeds):
            raise ValueError(f"train_seeds must be distinct, got {self.train_seeds}")
        if any("+" in t for t in self.tasks):
            raise ValueError(f"tasks must be original tasks (got {self.tasks}); name the perturbation with "
                             "--benchmark.perturbation instead of '<task>+<perturbation>'")
        if self.perturbation is not None:
            parse_perturbation(self.perturbation)
        if self.interaction_episodes < 1 or self.videos_per_outcome < 0:
            raise ValueError("interaction_episodes must be >= 1 and videos_per_outcome >= 0")


def run_benchmark(out: str | os.PathLike, cfg: BenchmarkConfig = BenchmarkConfig()) -> dict:
    """Run (or continue) the benchmark in ``out``; returns the tables per evaluation setting."""
    out = Path(out)
    if cfg.demos is not None and not Path(cfg.demos).is_dir():
        raise DatasetError(f"demonstration folder {cfg.demos} does not exist; collect it first "
                           f"(apo collect-demos --out {cfg.demos}) or leave --benchmark.demos out")
    record = asdict(cfg)
    if cfg.base_policy is not None:
        del record["recipe"]  # nothing is trained from it: a change of its defaults must not block continuing
    check_and_save_config(out, record, RESUMABLE_CHANGES)
    log = RunLog(out / "log.txt", console)
    settings = evaluation_settings(cfg.tasks, cfg.perturbation)
    deploy_tasks = next(iter(settings.values()))
    eval_cfg = dataclasses.replace(cfg.eval, tasks=all_tasks(settings))
    log.stage(f"benchmark in {out}: tasks {', '.join(cfg.tasks)}"
              + (f", perturbation {cfg.perturbation}" if cfg.perturbation else ""))

    demos = Path(cfg.demos) if cfg.demos is not None else out / "demos"
    base = cfg.base_policy
    if base is None:
        base = out / "base" / "policy"
        if not (base / "config.json").exists():
            log.stage("base policy: expert demonstrations and behaviour cloning")
            collect_demos(demos, dataclasses.replace(cfg.demo, tasks=cfg.tasks), cfg.env)
            train_base_policy(demos, out / "base", cfg.recipe)
    elif cfg.demos is None and cfg.refine.demos_per_task:
        log.stage(f"expert demonstrations for refinement ({cfg.refine.demos_per_task} per task)")
        collect_demos(demos, dataclasses.replace(cfg.demo, tasks=cfg.tasks, episodes_per_task=cfg.refine.demos_per_task),
                      cfg.env)
    refine_demos = demos if cfg.refine.demos_per_task else None

    def evaluate_policy(name: str, policy_dir: Path, method: str, first_seed: bool) -> dict:
        log.stage(f"evaluate {name}")
        t0 = time.time()
        videos = cfg.videos_per_outcome if (method in cfg.video_methods and first_seed) else 0
        results = evaluate_once(policy_dir, out / "eval" / f"{name}.json",
                                dataclasses.replace(eval_cfg, videos_per_outcome=videos), cfg.env)
        rates = ", ".join(f"{k} {v:.0%}" for k, v in setting_success(results, settings).items())
        log.info(f"{name}: success {rates} ({time.time() - t0:.0f} s)")
        return results

    runs = {"base": [evaluate_policy("base", base, "base", True)]}

    where = f"the {PERTURBED} setting ({cfg.perturbation})" if cfg.perturbation else f"the {ORIGINAL} setting"
    log.stage(f"interaction episodes with the simulated person in {where}")
    inter = out / "interactions"
    summary = collect_interactions(
        VLAPolicy.load(base), deploy_tasks, cfg.interaction_episodes, lambda task: SimulatedPerson(task, cfg.person),
        inter, cfg.deploy, cfg.env,
    )
    log.info(f"interactions: {summary.describe()}")
    write_interaction_videos(inter, out / "videos" / "interactions", cfg.videos_per_outcome)

    for objective in cfg.objectives:
        runs[objective] = []
        for i, seed in enumerate(cfg.train_seeds):
            name = f"{objective}_s{seed}"
            run_dir = out / "refine" / name
            if not (run_dir / "policy" / "config.json").exists():
                log.stage(f"refine: {name}")
                t0 = time.time()
                rcfg = dataclasses.replace(cfg.refine, objective=objective,
                                           train=dataclasses.replace(cfg.refine.train, seed=seed))
                # the objectives of one seed share the reference log-probs (same base, data and KL partners)
                refine(base, inter, refine_demos, run_dir, rcfg, reference_cache=out / "refine" / f"reference_s{seed}.pt")
                log.info(f"refined {name} in {time.time() - t0:.0f} s")
            runs[objective].append(evaluate_policy(name, run_dir / "policy", objective, i == 0))

    tables = {name: (method_table(runs, list(tasks)), list(tasks)) for name, tasks in settings.items()}
    descriptions = {
        PERTURBED: f"Deployed, refined and evaluated under the `{cfg.perturbation}` perturbation.",
        ORIGINAL: ("The original tasks (no forgetting: refinement in the perturbed setting should keep these)."
                   if cfg.perturbation else None),
    }
    md = write_settings_report(tables, out, "Refinement benchmark", descriptions=descriptions,
                               extra={"interaction_summary": summary.as_dict(), "perturbation": cfg.perturbation,
                                      "train_seeds": list(cfg.train_seeds), "eval_episodes": cfg.eval.episodes})
    log.stage(f"report: {out / 'results.md'}")
    console.print(md)
    return {name: table for name, (table, _) in tables.items()}
