"""Fixtures of the deployment tests: one real MetaWorld pick-place state (env closed after use)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

DEPLOY_TASK = "pick-place-v3"


@pytest.fixture(scope="module")
def pick_place_state() -> np.ndarray:
    """The 39-d MetaWorld state of a freshly reset pick-place scene (seed 3)."""
    from apo.envs import EnvConfig, make_env

    env = make_env(DEPLOY_TASK, EnvConfig(max_steps=10))
    try:
        _, info = env.reset(seed=3)
    finally:
        env.close()
    return info["state"].copy()


def fake_instruction_embedding(text: str) -> torch.Tensor:
    """A deterministic unit 384-d vector per text (stands in for the sentence encoder)."""
    g = torch.Generator().manual_seed(zlib.crc32(text.encode()))
    v = torch.randn(384, generator=g)
    return v / v.norm()


def _tiny_bin_policy(instructions: list[str], seed: int = 0, horizon: int = 2, n_bins: int = 32):
    """A tiny VLAPolicy (d_model 32, 1 layer, 2 heads) with a bin tokenizer built from made-up stats;
    the instruction embeddings are cached up front, so the sentence encoder is never loaded."""
    from apo.data import DatasetStats
    from apo.models import VLAPolicy
    from apo.tokenizers import BinActionTokenizer

    stats = DatasetStats(action_q01=[-1.0, -1.0, -1.0, -1.0], action_q99=[1.0, 1.0, 1.0, 1.0],
                         proprio_mean=[0.0, 0.6, 0.15, 0.5], proprio_std=[0.1, 0.1, 0.1, 0.5], num_steps=100)
    tok = BinActionTokenizer(stats.action_q01, stats.action_q99, n_bins=n_bins, horizon=horizon)
    torch.manual_seed(seed)
    policy = VLAPolicy.build(tok, stats, image_size=64, d_model=32, n_layers=1, n_heads=2)
    for text in instructions:
        policy._instructions[text] = fake_instruction_embedding(text)
    return policy.eval()


@pytest.fixture(scope="module")
def tiny_bin_policy():
    """Factory of tiny policies: ``tiny_bin_policy([instruction], seed=0, horizon=2, n_bins=32)``."""
    return _tiny_bin_policy
