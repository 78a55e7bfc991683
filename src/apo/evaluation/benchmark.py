"""``apo benchmark``: the paper's protocol, one resumable command.

Stages (each skipped when its output exists, so a killed run continues where it stopped):
1. expert demonstrations (``demos/``) and the base policy by BC (``base/policy``), unless given;
2. the base policy evaluated on the eval seeds (``eval/base.json``);
3. interaction episodes with the simulated person (``interactions/``);
4. for every training seed and objective: refinement (``refine/<objective>_s<seed>/policy``) and
   evaluation on the same eval seeds (``eval/<objective>_s<seed>.json``);
5. a table (``results.md``, ``results.json``) and a bar chart (``success.png``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console

from apo.data.demos import DemoConfig, collect_demos
from apo.deployment import DeployConfig, SimulatedPerson, SimulatedPersonConfig, collect_interactions
from apo.envs import DEV_SUITE, EnvConfig
from apo.evaluation.report import method_table, write_report
from apo.evaluation.rollout import EvalConfig, evaluate, results_to_dict
from apo.models import VLAPolicy
from apo.training.base_policy import BaseRecipe, train_base_policy
from apo.training.refine import RefineConfig, refine

console = Console()

ALL_OBJECTIVES = ("apo", "kto", "dpo", "hg-dagger", "iwr", "sirius")


@dataclass(frozen=True)
class BenchmarkConfig:
    tasks: tuple[str, ...] = DEV_SUITE
    """Tasks of the suite."""
    objectives: tuple[str, ...] = ALL_OBJECTIVES
    """Refinement objectives compared (all on the same base, data and eval seeds)."""
    base_policy: Path | None = None
    """Existing base policy folder (None: collect demos and train one in the run folder)."""
    demos: Path | None = None
    """Existing expert demonstration folder (None: collect into the run folder)."""
    demo: DemoConfig = field(default_factory=lambda: DemoConfig(episodes_per_task=100))
    """Demonstrations for the base policy (when no base policy is given)."""
    recipe: BaseRecipe = field(default_factory=BaseRecipe)
    """Base policy recipe (when no base policy is given)."""
    interaction_episodes: int = 20
    """Interaction episodes per task collected with the simulated person (the paper: 20)."""
    person: SimulatedPersonConfig = field(default_factory=SimulatedPersonConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    train_seeds: tuple[int, ...] = (0,)
    """Refinement seeds per objective (results pool their episodes; per-seed rates are kept)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    env: EnvConfig = field(default_factory=EnvConfig)

    def __post_init__(self) -> None:
        if not self.objectives or not self.train_seeds:
            raise ValueError("objectives and train_seeds must not be empty")


def _eval_once(policy_dir: Path, path: Path, cfg: BenchmarkConfig) -> dict:
    if path.exists():
        return json.loads(path.read_text())["results"]
    policy = VLAPolicy.load(policy_dir)
    ecfg = dataclasses.replace(cfg.eval, tasks=cfg.tasks)
    results = evaluate(policy, ecfg, cfg.env, path.parent / path.stem)
    payload = {"results": results_to_dict(results), "policy": str(policy_dir)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)
    return payload["results"]


def run_benchmark(out: str | os.PathLike, cfg: BenchmarkConfig = BenchmarkConfig()) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))

    demos = cfg.demos or out / "demos"
    base = cfg.base_policy
    if base is None:
        base = out / "base" / "policy"
        if not (base / "config.json").exists():
            console.rule("base policy")
            collect_demos(demos, dataclasses.replace(cfg.demo, tasks=cfg.tasks), cfg.env)
            train_base_policy(demos, out / "base", cfg.recipe)

    console.rule("evaluate base policy")
    runs = {"base": [_eval_once(base, out / "eval" / "base.json", cfg)]}

    console.rule("interaction episodes (simulated person)")
    base_policy = VLAPolicy.load(base)
    inter = out / "interactions"
    summary = collect_interactions(
        base_policy, cfg.tasks, cfg.interaction_episodes, lambda task: SimulatedPerson(task, cfg.person),
        inter, cfg.deploy, cfg.env,
    )
    console.print(summary.as_dict())

    for objective in cfg.objectives:
        runs[objective] = []
        for seed in cfg.train_seeds:
            name = f"{objective}_s{seed}"
            run_dir = out / "refine" / name
            if not (run_dir / "policy" / "config.json").exists():
                console.rule(f"refine: {name}")
                rcfg = dataclasses.replace(cfg.refine, objective=objective,
                                           train=dataclasses.replace(cfg.refine.train, seed=seed))
                refine(base, inter, demos if Path(demos).exists() else None, run_dir, rcfg)
            console.rule(f"evaluate: {name}")
            runs[objective].append(_eval_once(run_dir / "policy", out / "eval" / f"{name}.json", cfg))

    table = method_table(runs, list(cfg.tasks))
    md = write_report(table, list(cfg.tasks), out, "Refinement benchmark",
                      extra={"interaction_summary": summary.as_dict()})
    console.print(md)
    return table
