"""One recorded episode, in memory.

Labels (per step, who acted and how it is judged later):
``LABEL_UNDESIRABLE = 0`` (policy steps just before a takeover, set by relabeling),
``LABEL_POLICY = 1`` (the policy acted), ``LABEL_HUMAN = 2`` (a person or the scripted expert acted).
Expert demonstrations are all ``LABEL_HUMAN``; ``source`` tells demos from interaction episodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LABEL_UNDESIRABLE = 0
LABEL_POLICY = 1
LABEL_HUMAN = 2

SOURCES = ("expert", "interaction")


@dataclass
class Episode:
    task: str
    instruction: str
    images: np.ndarray
    """uint8 (T, H, W, 3)"""
    proprio: np.ndarray
    """float32 (T, P)"""
    actions: np.ndarray
    """float32 (T, A): the executed actions"""
    rewards: np.ndarray
    """float32 (T,)"""
    dones: np.ndarray
    """bool (T,): True on the last step"""
    labels: np.ndarray
    """int8 (T,): see module docstring"""
    success: bool
    seed: int
    source: str = "expert"
    policy_actions: np.ndarray | None = None
    """float32 (T, A): the policy's own proposed action at every step (interaction episodes)"""
    extras: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def validate(self) -> None:
        T = self.actions.shape[0] if self.actions.ndim >= 1 else 0
        problems = []
        if T == 0:
            problems.append("episode has no steps")
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            problems.append(f"images must be uint8 (T, H, W, 3), got {self.images.dtype} {self.images.shape}")
        if self.actions.ndim != 2:
            problems.append(f"actions must be (T, A), got {self.actions.shape}")
        if self.proprio.ndim != 2:
            problems.append(f"proprio must be (T, P), got {self.proprio.shape}")
        for name in ("images", "proprio", "rewards", "dones", "labels"):
            arr = getattr(self, name)
            if arr.shape[:1] != (T,):
                problems.append(f"{name} has {arr.shape[:1]} steps but actions have {T}")
        if self.policy_actions is not None and self.policy_actions.shape != self.actions.shape:
            problems.append(f"policy_actions shape {self.policy_actions.shape} != actions shape {self.actions.shape}")
        if T and not np.isin(self.labels, (LABEL_UNDESIRABLE, LABEL_POLICY, LABEL_HUMAN)).all():
            problems.append(f"labels must be in {{0, 1, 2}}, got {np.unique(self.labels)}")
        if self.source not in SOURCES:
            problems.append(f"source must be one of {SOURCES}, got {self.source!r}")
        if T and not np.all(np.isfinite(self.actions)):
            problems.append("actions contain NaN/inf")
        if problems:
            raise ValueError(f"invalid episode ({self.task}, seed {self.seed}): " + "; ".join(problems))
