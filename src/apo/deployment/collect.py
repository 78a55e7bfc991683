"""``apo collect``: deploy a policy with a person in the loop and record labeled episodes.

Resumable: episodes already in the output folder are counted per task and skipped (each
episode is its own atomic file, so a kill loses at most the episode being run).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from apo.data import EpisodeWriter, load_episodes
from apo.data.stats import DatasetStats
from apo.deployment.labels import takeover_steps
from apo.deployment.runner import DeployConfig, EpisodeSummary, episode_triggers, run_episode
from apo.deployment.sources import InterventionSource
from apo.envs import EnvConfig, make_env
from apo.envs.metaworld_env import check_rendering

INTERACTION_SEED_BASE = 1_000_000
"""Interaction episodes use env seeds from here on (disjoint from demo and eval seeds)."""


@dataclass
class CollectionSummary:
    episodes: int
    steps: int
    human_steps: int
    takeovers: int
    successes: int
    autonomous_successes: int

    @property
    def intervention_rate(self) -> float:
        return self.human_steps / max(1, self.steps)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(
            intervention_rate=self.intervention_rate,
            takeovers_per_episode=self.takeovers / max(1, self.episodes),
            success_rate_with_help=self.successes / max(1, self.episodes),
            success_rate_without_help=self.autonomous_successes / max(1, self.episodes),
        )
        return d

    def describe(self) -> str:
        """One line: episodes, intervention rate, takeovers per episode, success with and without help."""
        d = self.as_dict()
        return (f"{self.episodes} episodes: intervention rate {d['intervention_rate']:.1%}, "
                f"{d['takeovers_per_episode']:.2f} takeovers/episode, success {d['success_rate_with_help']:.0%} "
                f"with help, {d['success_rate_without_help']:.0%} without")

    @classmethod
    def from_summaries(cls, items: list[EpisodeSummary]) -> "CollectionSummary":
        return cls(
            episodes=len(items), steps=sum(s.steps for s in items), human_steps=sum(s.human_steps for s in items),
            takeovers=sum(s.takeovers for s in items), successes=sum(s.success for s in items),
            autonomous_successes=sum(s.autonomous_success for s in items),
        )


def _summary_of_recorded(out: Path) -> list[EpisodeSummary]:
    items = []
    for ep in load_episodes(out):
        n_takeovers = len(takeover_steps(np.where(ep.labels == 0, 1, ep.labels)))
        items.append(EpisodeSummary(ep.task, ep.seed, len(ep), int((ep.labels == 2).sum()), n_takeovers, ep.success))
    return items


def collect_interactions(
    policy,
    tasks: tuple[str, ...],
    episodes_per_task: int | Mapping[str, int],
    make_source: Callable[[str], InterventionSource],
    out: str | os.PathLike,
    cfg: DeployConfig = DeployConfig(),
    env_cfg: EnvConfig = EnvConfig(),
    seed: int = 0,
) -> CollectionSummary:
    """Deploy ``policy`` on each task's episodes (``episodes_per_task``: one count for every task, or a count
    per task) with ``make_source(task)`` as the person, recording them into ``out``; returns the summary."""
    check_rendering(policy.rendering_to_match(), env_cfg)
    counts = {t: episodes_per_task for t in tasks} if isinstance(episodes_per_task, int) else dict(episodes_per_task)
    if missing := [t for t in tasks if t not in counts]:
        raise ValueError(f"no episode count for task(s) {missing}; give one per task or one for all")
    out = Path(out)
    writer = EpisodeWriter(out)
    done: list[EpisodeSummary] = _summary_of_recorded(out) if writer.num_episodes else []
    with tqdm(total=sum(counts[t] for t in tasks), desc="collect", unit="ep", dynamic_ncols=True) as bar:
        _collect(policy, tasks, counts, make_source, writer, cfg, env_cfg, seed, done, bar)
    summary = CollectionSummary.from_summaries(done)
    episodes = load_episodes(out)
    per_task = {t: CollectionSummary.from_summaries([s for s in done if s.task == t]).as_dict()
                for t in dict.fromkeys(s.task for s in done)}
    (out / "summary.json").write_text(json.dumps({
        "summary": summary.as_dict(), "per_task": per_task, "triggers": trigger_counts(episodes),
        "deploy": asdict(cfg)}, indent=2))
    DatasetStats.compute(episodes).save(out)
    return summary


def trigger_counts(episodes) -> dict[str, dict[str, int]]:
    """Per task, how often each trigger made the person take over (from the episodes' ``triggers`` extra,
    "step:trigger ..."; episodes recorded without it count nothing)."""
    counts: dict[str, dict[str, int]] = {}
    for ep in episodes:
        task = counts.setdefault(ep.task, {})
        for _, name in episode_triggers(ep):
            task[name] = task.get(name, 0) + 1
    return counts


def _collect(policy, tasks, counts: dict[str, int], make_source, writer, cfg, env_cfg, seed,
             done: list[EpisodeSummary], bar: tqdm) -> None:
    """Run the missing episodes; ``done`` (the episodes already recorded) is extended with the new ones."""
    seen = {(s.task, s.seed) for s in done}
    for task in tasks:
        source = make_source(task)  # first: a missing device fails before anything is built
        try:
            env = make_env(task, env_cfg)
            try:
                for i in range(counts[task]):
                    s = INTERACTION_SEED_BASE + seed + i
                    if (task, s) in seen:
                        bar.update(1)
                        continue
                    episode, summary = run_episode(env, policy, source, s, cfg)
                    if episode is not None:
                        writer.write(episode)
                    done.append(summary)
                    agg = CollectionSummary.from_summaries(done)
                    bar.update(1)
                    bar.set_postfix(task=task, takeovers=agg.takeovers, success=f"{agg.successes}/{agg.episodes}",
                                    human=f"{agg.intervention_rate:.0%}")
            finally:
                env.close()
        finally:
            source.close()
