"""Image augmentation for training: random shift (pad by replication, random crop; DrQ-style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (B, H, W, C) -> same shape, each image shifted by up to ``pad`` pixels in x and y."""
    if pad <= 0:
        return images
    B, H, W, C = images.shape
    x = F.pad(images.permute(0, 3, 1, 2).float(), (pad, pad, pad, pad), mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (B, 2), generator=generator).tolist()
    out = torch.stack([x[b, :, oy : oy + H, ox : ox + W] for b, (oy, ox) in enumerate(offsets)])
    return out.to(images.dtype).permute(0, 2, 3, 1).contiguous()
