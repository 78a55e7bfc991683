"""A robot that asks for help: per-step uncertainty, a threshold calibrated to a budget, requests.

The policy's uncertainty at a step is the mean per-token entropy (nats) of the action chunk it is
executing (``act_batch(..., return_info=True)``; a chunk is predicted when the plan runs out or
after the person acted, so every step has the entropy of the chunk it comes from).

* :func:`calibrate_threshold` turns the per-step entropies of autonomous rollouts into the
  threshold that a share ``budget`` of autonomous steps exceeds (the ``1 - budget`` quantile):
  asking for help above it costs about ``budget`` of the person's attention;
* :class:`HelpRequester` raises a request while the entropy is above the threshold (for
  ``patience`` consecutive predictions); it is callable, so it is the ``help_signal`` of a
  :class:`~apo.deployment.simulated.SimulatedPerson`, and the console shows it as a banner;
* :class:`UncertaintyPolicy` wraps a ``VLAPolicy`` for ``run_episode``: it records the entropy of
  every prediction and feeds the requester (before the source decides on that step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from apo.deployment.runner import DeployConfig, run_episode
from apo.deployment.sources import Decision, InterventionSource, StepContext

CALIBRATION_SEED_BASE = 3_000_000
"""Calibration rollouts use env seeds from here on (disjoint from demo, eval and interaction seeds)."""


@dataclass(frozen=True)
class HelpConfig:
    threshold: float | None = None
    """Mean token entropy (nats) above which the robot asks for help (None: calibrate from budget)."""
    budget: float | None = None
    """Target share of autonomous steps with a help request; the threshold is the (1 - budget) quantile of the
    per-step entropies of calibration rollouts (None and no threshold: the robot never asks)."""
    calibration_episodes: int = 2
    """Autonomous calibration rollouts per task (with budget)."""
    patience: int = 1
    """Consecutive uncertain predictions before a request is raised."""

    def __post_init__(self) -> None:
        if self.budget is not None and not 0.0 < self.budget < 1.0:
            raise ValueError(f"budget must be in (0, 1), got {self.budget}")
        if self.calibration_episodes < 1 or self.patience < 1:
            raise ValueError("calibration_episodes and patience must be >= 1")

    @property
    def enabled(self) -> bool:
        return self.threshold is not None or self.budget is not None


def calibrate_threshold(entropies: np.ndarray | list[float], budget: float) -> float:
    """The (1 - budget) quantile of per-step entropies from autonomous rollouts: about a share
    ``budget`` of such steps lies above it (and would ask for help)."""
    e = np.asarray(entropies, np.float64).ravel()
    if not 0.0 < budget < 1.0:
        raise ValueError(f"budget must be in (0, 1), got {budget}")
    if e.size == 0:
        raise ValueError("no entropies to calibrate on: run at least one autonomous rollout")
    if not np.all(np.isfinite(e)):
        raise ValueError("entropies must be finite")
    return float(np.quantile(e, 1.0 - budget))


def entropy_to_confidence(entropy: float | None, max_entropy: float) -> float | None:
    """Mean token entropy -> confidence in [0, 1]: 1 for a certain prediction, 0 for a uniform one."""
    if entropy is None:
        return None
    return float(np.clip(1.0 - entropy / max_entropy, 0.0, 1.0)) if max_entropy > 0 else 1.0


class HelpRequester:
    """Asks for help while the policy's uncertainty is above ``threshold``.

    ``observe(entropy)`` is called at every prediction; ``requesting`` (or calling the object)
    tells whether a request is active; ``requests`` counts the requests raised since ``reset``."""

    def __init__(self, threshold: float, patience: int = 1):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold}")
        self.threshold = float(threshold)
        self.patience = patience
        self.reset()

    @classmethod
    def calibrated(cls, entropies, budget: float, patience: int = 1) -> "HelpRequester":
        return cls(calibrate_threshold(entropies, budget), patience)

    def reset(self) -> None:
        self.requesting = False
        self.requests = 0
        self.last_entropy: float | None = None
        self._above = 0

    def observe(self, entropy: float) -> bool:
        self.last_entropy = float(entropy)
        self._above = self._above + 1 if entropy > self.threshold else 0
        was = self.requesting
        self.requesting = self._above >= self.patience
        self.requests += self.requesting and not was
        return self.requesting

    def __call__(self) -> bool:
        return self.requesting


class UncertaintyPolicy:
    """A ``VLAPolicy`` for ``run_episode`` that also measures its uncertainty at every prediction.

    Exposes what the runner uses (``tokenizer``, ``act``); ``last_entropy`` / ``confidence`` describe
    the chunk being executed; the requester (if any) observes every prediction."""

    def __init__(self, policy, requester: HelpRequester | None = None):
        self.policy = policy
        self.tokenizer = policy.tokenizer
        self.requester = requester
        self.max_entropy = math.log(policy.config.vocab_size)
        self.last_entropy: float | None = None

    def reset(self) -> None:
        self.last_entropy = None
        if self.requester is not None:
            self.requester.reset()

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        actions, info = self.policy.act_batch(obs["image"][None], np.asarray(obs["proprio"])[None],
                                              [obs["instruction"]], return_info=True)
        self.last_entropy = float(np.mean(info["entropy"][0]))
        if self.requester is not None:
            self.requester.observe(self.last_entropy)
        return actions[0]

    @property
    def confidence(self) -> float | None:
        return entropy_to_confidence(self.last_entropy, self.max_entropy)

    @property
    def requesting(self) -> bool:
        return self.requester is not None and self.requester.requesting


class EntropyLog(InterventionSource):
    """A source that never intervenes and logs the entropy of the chunk behind every step
    (wrap another source with ``inner`` to log under a person instead)."""

    name = "entropy-log"

    def __init__(self, policy: UncertaintyPolicy, inner: InterventionSource | None = None):
        self.policy = policy
        self.inner = inner
        self.entropies: list[float] = []
        self.requests: list[bool] = []
        self.labels: list[bool] = []
        if inner is not None:
            self.name = inner.name

    def reset(self, seed: int) -> None:
        self.entropies, self.requests, self.labels = [], [], []
        self.policy.reset()
        if self.inner is not None:
            self.inner.reset(seed)

    def decide(self, ctx: StepContext) -> Decision:
        d = self.inner.decide(ctx) if self.inner is not None else Decision()
        if not d.paused:
            self.entropies.append(float(self.policy.last_entropy))
            self.requests.append(self.policy.requesting)
            self.labels.append(d.action is not None)
        return d

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


def autonomous_entropies(policy, tasks: tuple[str, ...], episodes_per_task: int, env_cfg=None,
                         seed: int = CALIBRATION_SEED_BASE) -> np.ndarray:
    """Per-step entropies of autonomous rollouts (no person) of ``policy`` on ``tasks``."""
    from apo.envs import EnvConfig, make_env

    env_cfg = env_cfg or EnvConfig()
    wrapped = policy if isinstance(policy, UncertaintyPolicy) else UncertaintyPolicy(policy)
    out: list[float] = []
    for task in tasks:
        env = make_env(task, env_cfg)
        log = EntropyLog(wrapped)
        try:
            for i in range(episodes_per_task):
                run_episode(env, wrapped, log, seed + i, DeployConfig())
                out.extend(log.entropies)
        finally:
            env.close()
    return np.asarray(out, np.float64)


def make_requester(policy, cfg: HelpConfig, tasks: tuple[str, ...], env_cfg=None) -> HelpRequester | None:
    """The requester described by ``cfg`` (calibrated by autonomous rollouts if it gives a budget)."""
    if cfg.threshold is not None:
        return HelpRequester(cfg.threshold, cfg.patience)
    if cfg.budget is not None:
        return HelpRequester.calibrated(autonomous_entropies(policy, tasks, cfg.calibration_episodes, env_cfg),
                                        cfg.budget, cfg.patience)
    return None
