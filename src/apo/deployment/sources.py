"""Intervention sources: who may take control of the robot at each step.

The runner asks a source once per control step, giving it a :class:`StepContext` (what the
policy sees, the full simulator state, the action the policy is about to execute). The source
answers with a :class:`Decision`: ``action=None`` lets the policy act; an action means the person
is in control this step. ``paused=True`` means the robot must hold still (e.g. the input device
disconnected): the runner executes a zero-motion action and records nothing for that step.

Sources are registered in ``INTERVENTION_SOURCES`` (``simulated``, ``keyboard``, ``gamepad``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from apo.registry import Registry


@dataclass
class StepContext:
    t: int
    """Step index in the episode."""
    obs: dict[str, Any]
    """The observation the policy sees."""
    state: np.ndarray
    """The full 39-d MetaWorld state (object and goal poses)."""
    policy_action: np.ndarray
    """The action the policy would execute at this step."""
    reward: float
    """Dense reward of the previous step (0 at t = 0)."""
    success: bool
    """Task solved at some step so far."""


@dataclass
class Decision:
    action: np.ndarray | None = None
    """The person's action; None lets the policy act."""
    paused: bool = False
    """Hold still and record nothing (device lost, person paused)."""
    mark: str | None = None
    """'success' or 'failure' if the person marked the episode at this step."""
    stop: bool = False
    """End the episode after this step."""


class InterventionSource(ABC):
    name: str = "source"

    def reset(self, seed: int) -> None:
        """Called at the start of every episode."""

    @abstractmethod
    def decide(self, ctx: StepContext) -> Decision: ...

    def close(self) -> None:
        """Release devices."""


INTERVENTION_SOURCES: Registry[type] = Registry("intervention source")
