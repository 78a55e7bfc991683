"""Metrics shared by every objective: token accuracy and decoded-action L1."""

from __future__ import annotations

import torch


@torch.no_grad()
def token_accuracy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Share of (real, if ``mask`` is given) tokens whose argmax is the target."""
    hit = (logits.argmax(-1) == targets).float()
    if mask is None:
        return hit.mean().item()
    m = mask.float()
    return ((hit * m).sum() / m.sum()).item() if m.sum() > 0 else float("nan")


@torch.no_grad()
def decoded_l1(logits: torch.Tensor, chunks: torch.Tensor, tokenizer) -> torch.Tensor:
    """Per-sample mean L1 (B,) between the greedy teacher-forced decode and the label chunks
    (NaN for a sequence the tokenizer cannot decode)."""
    pred = torch.from_numpy(tokenizer.decode(logits.argmax(-1).cpu().numpy()))
    return (pred - chunks.cpu()).abs().flatten(1).mean(1)
