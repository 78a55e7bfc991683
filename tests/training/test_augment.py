"""Random-shift augmentation."""

from __future__ import annotations

import numpy as np
import torch

from apo.training.augment import random_shift


def images(B=6, H=12, W=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (B, H, W, 3), generator=g, dtype=torch.uint8)


def test_shape_and_dtype():
    x = images()
    out = random_shift(x, 3, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert out.is_contiguous()


def test_output_is_a_translated_crop_of_the_edge_padded_input():
    pad = 2
    x = images(B=16)
    out = random_shift(x, pad, torch.Generator().manual_seed(1)).numpy()
    padded = np.pad(x.numpy(), ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    H, W = x.shape[1:3]
    offsets = []
    for b in range(x.shape[0]):
        matches = [
            (oy, ox)
            for oy in range(2 * pad + 1)
            for ox in range(2 * pad + 1)
            if np.array_equal(out[b], padded[b, oy : oy + H, ox : ox + W])
        ]
        assert matches, f"image {b} is not a crop of the padded input"
        offsets.append(matches[0])
    assert len(set(offsets)) > 1  # shifts vary across the batch...
    assert any(o != (pad, pad) for o in offsets)  # ...and are not all the identity


def test_pad_zero_is_identity():
    x = images()
    out = random_shift(x, 0)
    assert torch.equal(out, x)


def test_generator_makes_it_reproducible():
    x = images(B=8)
    a = random_shift(x, 4, torch.Generator().manual_seed(5))
    b = random_shift(x, 4, torch.Generator().manual_seed(5))
    c = random_shift(x, 4, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
