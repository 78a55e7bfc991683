"""Behaviour cloning: token cross-entropy (optionally per-sample weighted)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from apo.objectives.base import OBJECTIVES
from apo.objectives.collectives import global_mean
from apo.objectives.metrics import decoded_l1, token_accuracy


def weighted_token_nll(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None,
                       mask: torch.Tensor | None = None, distributed: bool | None = None) -> torch.Tensor:
    """L = sum_i w_i * (sum_t m_it (-log p(t_it)) / sum_t m_it) / sum_i w_i  (plain CE when w = 1, m = 1).

    logits (B, N, V), targets (B, N), weights (B,) >= 0, mask (B, N): 1 at real tokens (padding of
    variable-length tokenizers does not count). With several processes the weight sum is the global
    one (all-reduced), so the mean of the process losses is the global loss.
    """
    nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view(targets.shape)
    if mask is None:
        per_sample = nll.mean(1)
    else:
        if mask.shape != targets.shape:
            raise ValueError(f"mask must be (B, N) = {tuple(targets.shape)}, got {tuple(mask.shape)}")
        m = mask.to(nll.dtype)
        per_sample = (nll * m).sum(1) / m.sum(1).clamp_min(1.0)
    if weights is None:
        return per_sample.mean()
    if weights.shape != per_sample.shape:
        raise ValueError(f"weights must be (B,) = {tuple(per_sample.shape)}, got {tuple(weights.shape)}")
    return (weights * per_sample).sum() / global_mean(weights.sum(), distributed).clamp_min(1e-8)


@OBJECTIVES.register("bc")
class BehaviourCloning:
    """Token cross-entropy on every sample of the batch."""

    uses_reference = False

    @classmethod
    def from_config(cls, cfg) -> "BehaviourCloning":
        return cls()

    def __call__(self, policy, batch):
        logits = policy.logits(batch)
        valid = policy.tokenizer.token_mask(batch["tokens"])
        loss = weighted_token_nll(logits, batch["tokens"], mask=valid)
        metrics = {
            "loss": loss.item(),
            "token_acc": token_accuracy(logits, batch["tokens"], valid),
            "l1": decoded_l1(logits, batch["chunks"], policy.tokenizer).nanmean().item(),
        }
        return loss, metrics
