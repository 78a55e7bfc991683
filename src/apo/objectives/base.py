"""Objective registry and the interface the trainer calls.

An objective is a callable ``objective(policy, batch) -> (loss, metrics)``. The math lives in pure
functions of tensors (log-probs, labels, weights, KL) in the modules beside this one; the objective
classes only gather inputs from the batch and call them.
"""

from __future__ import annotations

from typing import Protocol

import torch

from apo.registry import Registry


class Objective(Protocol):
    uses_reference: bool
    """Whether the batch needs the frozen reference's log-probs (``ref_logp`` and friends)."""

    def __call__(self, policy, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]: ...


OBJECTIVES: Registry[type] = Registry("objective")
