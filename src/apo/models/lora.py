"""LoRA adapters (peft) on the transformer's linear layers, and merging them for deployment."""

from __future__ import annotations

import torch

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"]


def add_lora(policy, rank: int = 32, alpha: float | None = None, dropout: float = 0.0) -> list[torch.nn.Parameter]:
    """Wrap ``policy.model`` with LoRA adapters; freeze everything else. Returns the trainable parameters."""
    import peft

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    cfg = peft.LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, lora_dropout=dropout,
                          target_modules=LORA_TARGETS)
    policy.model = peft.get_peft_model(policy.model, cfg)
    return [p for p in policy.model.parameters() if p.requires_grad]


def has_lora(policy) -> bool:
    import peft

    return isinstance(policy.model, peft.PeftModel)


def merge_lora(policy) -> None:
    """Fold the adapters into the base weights (policy.model becomes a plain TinyVLA again)."""
    if has_lora(policy):
        policy.model = policy.model.merge_and_unload()
    for p in policy.model.parameters():
        p.requires_grad_(True)
