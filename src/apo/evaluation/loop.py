"""``apo loop``: lifelong refinement. Deploy -> collect with takeover -> refine -> redeploy, R rounds.

Round r deploys policy r (round 0: the base policy) for ``episodes_per_task`` interaction episodes per
task with the simulated person, which measures its intervention rate; policy r is also evaluated
autonomously on the eval seeds. Policy r+1 is policy r refined on every interaction episode collected so
far plus the expert demonstrations, with policy r as the frozen reference. Every stage is skipped when its
output exists, so a killed loop continues. Writes ``loop.json`` and ``loop.png``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console

from apo.deployment import DeployConfig, SimulatedPerson, SimulatedPersonConfig, collect_interactions
from apo.envs import DEV_SUITE, EnvConfig
from apo.evaluation.rollout import EvalConfig, evaluate, results_to_dict
from apo.models import VLAPolicy
from apo.training.refine import RefineConfig, refine

console = Console()


@dataclass(frozen=True)
class LoopConfig:
    tasks: tuple[str, ...] = DEV_SUITE
    """Tasks deployed on."""
    rounds: int = 3
    """Refinement rounds (R); R + 1 policies are deployed."""
    episodes_per_task: int = 20
    """Interaction episodes per task and round (the paper updates every 20 interactions)."""
    person: SimulatedPersonConfig = field(default_factory=SimulatedPersonConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(episodes=20))
    env: EnvConfig = field(default_factory=EnvConfig)

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.episodes_per_task < 1:
            raise ValueError("rounds and episodes_per_task must be >= 1")


def run_loop(base_policy: str | os.PathLike, demos: str | os.PathLike | None, out: str | os.PathLike,
             cfg: LoopConfig = LoopConfig()) -> list[dict]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
    policy_dir = Path(base_policy)
    history: list[dict] = []
    interactions: list[Path] = []
    for r in range(cfg.rounds + 1):
        rd = out / f"round_{r}"
        console.rule(f"round {r}: deploy {policy_dir}")
        policy = VLAPolicy.load(policy_dir)
        summary = collect_interactions(
            policy, cfg.tasks, cfg.episodes_per_task, lambda task: SimulatedPerson(task, cfg.person),
            rd / "interactions", cfg.deploy, cfg.env, seed=r * 10_000,
        ).as_dict()
        interactions.append(rd / "interactions")
        eval_path = rd / "eval.json"
        if not eval_path.exists():
            res = evaluate(policy, dataclasses.replace(cfg.eval, tasks=cfg.tasks), cfg.env)
            eval_path.write_text(json.dumps({"results": results_to_dict(res)}, indent=2))
        results = json.loads(eval_path.read_text())["results"]
        history.append({
            "round": r, "policy": str(policy_dir), "intervention_rate": summary["intervention_rate"],
            "takeovers_per_episode": summary["takeovers_per_episode"],
            "success_rate": results["average"]["success_rate"],
            "per_task": {t: results[t]["success_rate"] for t in cfg.tasks},
        })
        console.print(history[-1])
        if r == cfg.rounds:
            break
        next_dir = rd / "refine"
        if not (next_dir / "policy" / "config.json").exists():
            refine(policy_dir, interactions, demos, next_dir, cfg.refine)
        policy_dir = next_dir / "policy"
    (out / "loop.json").write_text(json.dumps(history, indent=2))
    plot_loop(history, out / "loop.png")
    return history


def plot_loop(history: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [h["round"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(rounds, [h["success_rate"] for h in history], "o-", label="success rate (autonomous)")
    ax.plot(rounds, [h["intervention_rate"] for h in history], "s--", label="intervention rate")
    ax.set_xlabel("round")
    ax.set_xticks(rounds)
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("lifelong refinement")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
