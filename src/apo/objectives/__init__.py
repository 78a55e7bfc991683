"""Objectives (registry: ``OBJECTIVES``): pure loss functions plus thin wrappers the trainer calls."""

from apo.objectives.base import OBJECTIVES, Objective
from apo.objectives.bc import BehaviourCloning, weighted_token_nll
from apo.objectives import refinement  # noqa: F401  (registers apo, kto, dpo, hg-dagger, iwr, sirius)

__all__ = ["OBJECTIVES", "BehaviourCloning", "Objective", "weighted_token_nll"]
