"""``apo loop``: lifelong refinement. Deploy -> collect with takeover -> refine -> redeploy, R rounds.

Round r deploys policy r (round 0: the base policy) for ``episodes_per_task`` interaction episodes per
task with the simulated person, which measures its intervention rate; policy r is also evaluated
autonomously on the eval seeds. Policy r+1 is the base policy refined on every interaction episode
collected so far plus the expert demonstrations, the base staying the frozen reference
(``refine_from="previous"``: policy r is refined instead, with itself as the reference, so the rounds'
updates compound; in docs/results.md that undid the first round's gain by round 3).

With ``extra_episodes`` every round but the last also collects that many more interaction episodes, shared
among the tasks in proportion to the person's steps on each in the round's ``episodes_per_task`` episodes
(the person's extra time goes where the robot needed help most); they are refined on but not counted in the
round's intervention rate, which stays measured on the same number of episodes per task every round.

With ``average_seeds`` every round is refined once per training seed (same episodes, same settings) into
``round_<r>/refine/seed_<s>/`` and the policy deployed next is the element-wise mean of those refined
policies (``apo average``, a weight soup); each seed's refinement is resumable on its own.

With ``perturbation`` the robot is deployed (and refined) in the perturbed setting and every policy is
also evaluated on the original tasks (forgetting).

Every stage is skipped when its output exists, so a killed loop continues (and ``--loop.rounds`` can be
raised to add rounds). After every round ``loop.json`` (history) and ``loop.png`` (success and
intervention rate per round) are rewritten; ``log.txt`` has a line per stage, ``round_<r>/`` holds the
interaction episodes, their videos (the person's steps framed in red), the evaluation (with videos)
and the refined policy.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from rich.console import Console

from apo.deployment import DeployConfig, SimulatedPerson, SimulatedPersonConfig, collect_interactions
from apo.envs import DEV_SUITE, EnvConfig
from apo.envs.perturbations import parse_perturbation
from apo.evaluation.protocol import (
    ORIGINAL, RunLog, all_tasks, check_and_save_config, evaluate_once, evaluation_settings, setting_success,
    write_interaction_videos,
)
from apo.evaluation.rollout import EvalConfig
from apo.models import VLAPolicy, average_policies
from apo.training.refine import RefineConfig, refine

console = Console()

RESUMABLE_CHANGES = (
    "rounds", "videos_per_outcome", "eval.parallel_envs", "eval.videos_per_task", "eval.videos_per_outcome",
    "refine.train.threads", "refine.train.log_every", "refine.train.checkpoint_every",
)
"""Settings a loop folder may be continued with after a change (more rounds, speed, logs, videos)."""

ROUND_SEED_STRIDE = 10_000
"""Round r collects its interaction episodes from env seed offset r * ROUND_SEED_STRIDE."""


@dataclass(frozen=True)
class LoopConfig:
    tasks: tuple[str, ...] = DEV_SUITE
    """Tasks deployed on (original tasks; see perturbation)."""
    perturbation: str | None = None
    """Deploy and refine under this registered perturbation (e.g. texture, position+lighting) and also
    evaluate on the original tasks. None: the original tasks."""
    rounds: int = 3
    """Refinement rounds (R); R + 1 policies are deployed."""
    episodes_per_task: int = 20
    """Interaction episodes per task and round (the paper updates every 20 interactions)."""
    extra_episodes: int = 0
    """More interaction episodes per round (all but the last), shared among the tasks in proportion to the
    person's steps on each in that round's episodes_per_task episodes. Refined on, not counted in the
    intervention rate. 0: none."""
    person: SimulatedPersonConfig = field(default_factory=SimulatedPersonConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    refine_from: Literal["previous", "base"] = "base"
    """base: refine the base policy every round on all interactions so far (one fixed reference, so rounds
    do not compound); previous: refine round r's policy, which is also the frozen reference (the first two
    loops of docs/results.md; their later rounds lost the first round's gain)."""
    average_seeds: tuple[int, ...] = ()
    """Refine every round once per training seed listed (at least two, e.g. 0 1 2; refine.train.seed is
    then ignored) and deploy the average of their weights (apo average). Costs one refinement per seed.
    Empty: one refinement with refine.train.seed."""
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(episodes=20))
    """Autonomous evaluation of every round's policy (its tasks are set from tasks and perturbation)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    videos_per_outcome: int = 1
    """Videos per task and outcome of every round's interaction episodes and evaluation (0: none)."""

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.episodes_per_task < 1:
            raise ValueError("rounds and episodes_per_task must be >= 1")
        if self.extra_episodes < 0:
            raise ValueError(f"extra_episodes must be >= 0, got {self.extra_episodes}")
        if self.episodes_per_task + self.extra_episodes > ROUND_SEED_STRIDE:
            raise ValueError(f"episodes_per_task + extra_episodes must be at most {ROUND_SEED_STRIDE} (a round's "
                             f"env seeds), got {self.episodes_per_task + self.extra_episodes}")
        if not self.tasks:
            raise ValueError("tasks must not be empty")
        if any("+" in t for t in self.tasks):
            raise ValueError(f"tasks must be original tasks (got {self.tasks}); name the perturbation with "
                             "--loop.perturbation instead of '<task>+<perturbation>'")
        if self.perturbation is not None:
            parse_perturbation(self.perturbation)
        if self.refine_from not in ("previous", "base"):
            raise ValueError(f"refine_from must be 'previous' or 'base', got {self.refine_from!r}")
        if len(self.average_seeds) == 1 or len(set(self.average_seeds)) != len(self.average_seeds):
            raise ValueError(f"average_seeds must list at least two different training seeds (or none), got "
                             f"{self.average_seeds}")
        if self.videos_per_outcome < 0:
            raise ValueError(f"videos_per_outcome must be >= 0, got {self.videos_per_outcome}")


def run_loop(base_policy: str | os.PathLike, demos: str | os.PathLike | None, out: str | os.PathLike,
             cfg: LoopConfig = LoopConfig()) -> list[dict]:
    out = Path(out)
    check_and_save_config(out, {"base_policy": str(base_policy), "demos": None if demos is None else str(demos),
                                **asdict(cfg)}, RESUMABLE_CHANGES)
    log = RunLog(out / "log.txt", console)
    settings = evaluation_settings(cfg.tasks, cfg.perturbation)
    deploy_setting, deploy_tasks = next(iter(settings.items()))
    eval_cfg = dataclasses.replace(cfg.eval, tasks=all_tasks(settings), videos_per_outcome=cfg.videos_per_outcome)
    policy_dir = Path(base_policy)
    history: list[dict] = []
    interactions: list[Path] = []
    for r in range(cfg.rounds + 1):
        rd = out / f"round_{r}"
        log.stage(f"round {r}: deploy {policy_dir}")
        policy = VLAPolicy.load(policy_dir)
        summary = collect_interactions(
            policy, deploy_tasks, cfg.episodes_per_task,
            lambda task: SimulatedPerson(task, cfg.person), rd / "interactions", cfg.deploy, cfg.env,
            seed=r * ROUND_SEED_STRIDE,
        )
        log.info(f"round {r} interactions: {summary.describe()}")
        interactions.append(rd / "interactions")
        write_interaction_videos(rd / "interactions", rd / "videos" / "interactions", cfg.videos_per_outcome)
        results = evaluate_once(policy_dir, rd / "eval.json", eval_cfg, cfg.env)
        success = setting_success(results, settings)
        d = summary.as_dict()
        entry = {
            "round": r, "policy": str(policy_dir), "setting": deploy_setting,
            "intervention_rate": d["intervention_rate"], "takeovers_per_episode": d["takeovers_per_episode"],
            "success_rate_with_help": d["success_rate_with_help"], "success_rate": success[deploy_setting],
            "per_task": {t: results[t]["success_rate"] for t in deploy_tasks},
        }
        extra = {}
        if cfg.extra_episodes and r < cfg.rounds:
            per_task = json.loads((rd / "interactions" / "summary.json").read_text())["per_task"]
            extra = allocate_by_help({t: per_task.get(t, {}).get("human_steps", 0) for t in deploy_tasks},
                                     cfg.extra_episodes)
            entry["extra_episodes"] = extra
        if deploy_setting != ORIGINAL:
            entry["success_rate_original"] = success[ORIGINAL]
            entry["per_task_original"] = {t: results[t]["success_rate"] for t in settings[ORIGINAL]}
        history.append(entry)
        log.info(f"round {r}: autonomous success {entry['success_rate']:.0%}"
                 + (f" ({ORIGINAL}: {entry['success_rate_original']:.0%})" if "success_rate_original" in entry else "")
                 + f", intervention rate {entry['intervention_rate']:.1%}")
        (out / "loop.json").write_text(json.dumps(history, indent=2))
        plot_loop(history, out / "loop.png")
        if r == cfg.rounds:
            break
        if sum(extra.values()):
            log.stage(f"round {r}: {sum(extra.values())} extra episodes where the person helped: "
                      + ", ".join(f"{t} {n}" for t, n in extra.items() if n))
            more = collect_interactions(
                policy, tuple(t for t in deploy_tasks if extra[t]), extra,
                lambda task: SimulatedPerson(task, cfg.person), rd / "extra_interactions", cfg.deploy, cfg.env,
                seed=r * ROUND_SEED_STRIDE + cfg.episodes_per_task,  # the seeds after the round's own
            )
            log.info(f"round {r} extra interactions: {more.describe()}")
            interactions.append(rd / "extra_interactions")
        next_dir = rd / "refine"
        if not (next_dir / "policy" / "config.json").exists():
            start = policy_dir if cfg.refine_from == "previous" else Path(base_policy)
            refine_round(start, list(interactions), demos, next_dir, cfg, log, f"round {r}: refine on the "
                         f"interactions of {r + 1} round(s)")
        policy_dir = next_dir / "policy"
    log.stage(f"loop done: {out / 'loop.json'}, {out / 'loop.png'}")
    return history


def refine_round(start: Path, interactions: list[Path], demos: str | os.PathLike | None, out_dir: Path,
                 cfg: LoopConfig, log: RunLog, what: str) -> Path:
    """Refine ``start`` into ``out_dir/policy``: once with refine.train.seed, or (``average_seeds``) once per
    seed into ``out_dir/seed_<s>`` (seeds already refined are kept) and then their average."""
    if not cfg.average_seeds:
        log.stage(what)
        refine(start, interactions, demos, out_dir, cfg.refine)
        return out_dir / "policy"
    seed_dirs = [out_dir / f"seed_{s}" for s in cfg.average_seeds]
    for s, seed_dir in zip(cfg.average_seeds, seed_dirs):
        if not (seed_dir / "policy" / "config.json").exists():
            log.stage(f"{what}, training seed {s}")
            train = dataclasses.replace(cfg.refine.train, seed=s)
            refine(start, interactions, demos, seed_dir, dataclasses.replace(cfg.refine, train=train))
    log.stage(f"{what}: average the policies of training seeds {', '.join(map(str, cfg.average_seeds))}")
    return average_policies([d / "policy" for d in seed_dirs]).save(out_dir / "policy")


def allocate_by_help(person_steps: Mapping[str, int], budget: int) -> dict[str, int]:
    """Share ``budget`` episodes among the tasks in proportion to the person's steps on each (largest
    remainder; ties go to the task listed first). A task the person never helped on gets none, and if the
    person helped on none, nothing is shared out."""
    if budget < 0 or any(n < 0 for n in person_steps.values()):
        raise ValueError(f"budget and person's steps must be >= 0, got {budget} and {dict(person_steps)}")
    total = sum(person_steps.values())
    if total == 0:
        return {t: 0 for t in person_steps}
    quotas = {t: budget * n / total for t, n in person_steps.items()}
    shares = {t: int(q) for t, q in quotas.items()}
    by_remainder = sorted(person_steps, key=lambda t: quotas[t] - shares[t], reverse=True)  # stable: ties keep order
    for t in by_remainder[: budget - sum(shares.values())]:
        shares[t] += 1
    return shares


def plot_loop(history: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [h["round"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(rounds, [h["success_rate"] for h in history], "o-", label="success rate (autonomous)")
    if all("success_rate_original" in h for h in history):
        ax.plot(rounds, [h["success_rate_original"] for h in history], "^:", label="success rate, original tasks")
    ax.plot(rounds, [h["intervention_rate"] for h in history], "s--", label="intervention rate")
    ax.set_xlabel("round")
    ax.set_xticks(rounds)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("lifelong refinement")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
