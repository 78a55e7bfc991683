"""The deployment runner: the policy acts, an intervention source may take over, every step is
recorded with who acted and what the policy proposed.

Per control step: the policy's proposal is the next action of its current chunk (a new chunk is
predicted when the plan runs out or after the person acted, so during a takeover the policy is
queried every step and its proposal is recorded too). The source decides; its action (label 2)
or the policy's (label 1) is executed. At the end of the episode the K policy steps before each
takeover are relabeled 0 (``relabel_pre_takeover``) and the episode is returned for recording.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from apo.data.episode import LABEL_HUMAN, LABEL_POLICY, Episode
from apo.deployment.labels import relabel_pre_takeover, takeover_steps
from apo.deployment.sources import InterventionSource, StepContext
from apo.envs.metaworld_env import rendering_extras


@dataclass(frozen=True)
class DeployConfig:
    k_undesirable: int = 10
    """Policy steps before each takeover labeled undesirable (0)."""
    execute_steps: int | None = 1
    """Actions of each predicted chunk executed before re-planning (None: the whole chunk). Re-planning
    every step (1) measured 31% vs 25% average success for the base policy (docs/base_policy.md)."""
    max_pause_steps: int = 100
    """Consecutive paused steps (device lost) after which the episode is aborted."""

    def __post_init__(self) -> None:
        if self.k_undesirable < 0:
            raise ValueError(f"k_undesirable must be >= 0, got {self.k_undesirable}")
        if self.execute_steps is not None and self.execute_steps < 1:
            raise ValueError(f"execute_steps must be >= 1, got {self.execute_steps}")


@dataclass
class EpisodeSummary:
    task: str
    seed: int
    steps: int
    human_steps: int
    takeovers: int
    success: bool
    mark: str | None = None
    aborted: bool = False
    frames: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def autonomous_success(self) -> bool:
        return self.success and self.takeovers == 0


def episode_triggers(episode) -> list[tuple[int, str]]:
    """The (step, trigger) pairs recorded in an interaction episode's ``triggers`` extra ("41:no_progress
    97:object_lost"); empty when the episode was recorded without them."""
    out = []
    for item in str(episode.extras.get("triggers", "")).split():
        step, sep, name = item.partition(":")
        if not sep or not name or not step.isdigit():
            raise ValueError(f"episode (task {episode.task}, seed {episode.seed}) has a malformed trigger {item!r} "
                             "in extras['triggers']; expected 'step:trigger' entries separated by spaces")
        out.append((int(step), name))
    return out


def run_episode(env, policy, source: InterventionSource, seed: int, cfg: DeployConfig = DeployConfig(),
                keep_frames: bool = False) -> tuple[Episode | None, EpisodeSummary]:
    """One deployed episode. Returns (episode to record, summary); the episode is None when no
    step was recorded (e.g. the device was lost from the start)."""
    horizon = policy.tokenizer.horizon
    execute = min(cfg.execute_steps or horizon, horizon)
    obs, info = env.reset(seed=seed)
    source.reset(seed)
    images, proprio, actions, proposals, rewards, labels = [], [], [], [], [], []
    plan: list[np.ndarray] = []
    reward, success, mark, aborted, paused_run = 0.0, False, None, False, 0
    frames: list[np.ndarray] = []
    t = 0
    while True:
        if not plan:
            plan = list(policy.act(obs)[:execute])
        proposal = plan[0]
        decision = source.decide(StepContext(t, obs, info["state"], proposal, reward, success))
        mark = decision.mark or mark
        if decision.paused:
            paused_run += 1
            hold = np.zeros(4, np.float32)
            hold[3] = actions[-1][3] if actions else -1.0
            obs, reward, term, trunc, info = env.step(hold)
            if paused_run >= cfg.max_pause_steps:
                aborted = True
                break
            if term or trunc:
                break
            continue
        paused_run = 0
        human = decision.action is not None
        action = np.asarray(decision.action if human else proposal, np.float32)
        if human:
            plan = []  # re-plan from the new state once the person hands back
        else:
            plan.pop(0)
        images.append(obs["image"])
        proprio.append(obs["proprio"])
        actions.append(action)
        proposals.append(np.asarray(proposal, np.float32))
        labels.append(LABEL_HUMAN if human else LABEL_POLICY)
        if keep_frames:
            frames.append(obs["image"])
        obs, reward, term, trunc, info = env.step(action)
        rewards.append(reward)
        success = success or info["success"]
        t += 1
        if term or trunc or decision.stop:
            break
    raw = np.asarray(labels, np.int8)
    summary = EpisodeSummary(
        task=env.task_name, seed=seed, steps=len(raw), human_steps=int((raw == LABEL_HUMAN).sum()),
        takeovers=len(takeover_steps(raw)) if len(raw) else 0, success=bool(success), mark=mark,
        aborted=aborted, frames=frames,
    )
    if not len(raw):
        return None, summary
    dones = np.zeros(len(raw), bool)
    dones[-1] = True
    episode = Episode(
        task=env.task_name, instruction=env.instruction, images=np.stack(images), proprio=np.stack(proprio),
        actions=np.stack(actions), rewards=np.asarray(rewards, np.float32), dones=dones,
        labels=relabel_pre_takeover(raw, cfg.k_undesirable), success=bool(success), seed=seed,
        source="interaction", policy_actions=np.stack(proposals),
        extras={"source": source.name, "takeovers": str(summary.takeovers), "mark": str(mark),
                "aborted": str(aborted), "k_undesirable": str(cfg.k_undesirable),
                # what made the person take over, "step:trigger" (sources that report triggers)
                "triggers": " ".join(f"{t}:{name}" for t, name in getattr(source, "triggers", [])),
                **rendering_extras(env)},
    )
    return episode, summary
