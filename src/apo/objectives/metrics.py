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
def tokens_l1(tokens: torch.Tensor, chunks: torch.Tensor, tokenizer) -> torch.Tensor:
    """Per-sample mean L1 (B,) between the action chunks decoded from ``tokens`` and the label chunks
    (NaN for a sequence the tokenizer cannot decode)."""
    pred = torch.from_numpy(tokenizer.decode(tokens.cpu().numpy()))
    return (pred - chunks.cpu()).abs().flatten(1).mean(1)


@torch.no_grad()
def decoded_l1(logits: torch.Tensor, chunks: torch.Tensor, tokenizer) -> torch.Tensor:
    """``tokens_l1`` of the greedy teacher-forced decode (the argmax at every position, given the label's
    earlier tokens)."""
    return tokens_l1(logits.argmax(-1), chunks, tokenizer)


@torch.no_grad()
def generated_l1(model, batch: dict[str, torch.Tensor], tokenizer) -> torch.Tensor:
    """``tokens_l1`` of the policy's own constrained greedy decode: the chunk it would execute (always
    decodable). Costs one generation of the batch."""
    was_training = model.training
    model.eval()
    try:
        tokens, _ = model.generate(batch["image"], batch["lang"], batch["proprio"],
                                   allowed=tokenizer.next_token_mask, pad_id=tokenizer.pad_id)
    finally:
        model.train(was_training)
    return tokens_l1(tokens, batch["chunks"], tokenizer)
