"""Behaviour cloning: token cross-entropy (optionally per-sample weighted)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from apo.objectives.base import OBJECTIVES
from apo.objectives.metrics import decoded_l1, token_accuracy


def weighted_token_nll(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """L = sum_i w_i * mean_t(-log p(t_it)) / sum_i w_i  (plain CE when w = 1).

    logits (B, N, V), targets (B, N), weights (B,) >= 0.
    """
    nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view(targets.shape)
    per_sample = nll.mean(1)
    if weights is None:
        return per_sample.mean()
    if weights.shape != per_sample.shape:
        raise ValueError(f"weights must be (B,) = {tuple(per_sample.shape)}, got {tuple(weights.shape)}")
    return (weights * per_sample).sum() / weights.sum().clamp_min(1e-8)


@OBJECTIVES.register("bc")
class BehaviourCloning:
    """Token cross-entropy on every sample of the batch."""

    @classmethod
    def from_config(cls, cfg) -> "BehaviourCloning":
        return cls()

    def __call__(self, policy, batch):
        logits = policy.logits(batch)
        loss = weighted_token_nll(logits, batch["tokens"])
        metrics = {
            "loss": loss.item(),
            "token_acc": token_accuracy(logits, batch["tokens"]),
            "l1": decoded_l1(logits, batch["chunks"], policy.tokenizer).mean().item(),
        }
        return loss, metrics
