"""Tiny policies for unit tests of objectives, references and training (no sentence encoder, no MuJoCo).

32 px images, a 1-layer d=32 transformer, actions normalized to [-1, 1] and a fixed random
embedding for the one instruction, so two policies built with the same seed are identical.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
import torch.nn.functional as F

from apo.data import DatasetStats, Episode

INSTRUCTION = "pick up the puck"
IMG = 32
STATS = DatasetStats([-1.0] * 4, [1.0] * 4, [0.0] * 4, [1.0] * 4, 10)


def bin_tokenizer(horizon: int = 2):
    from apo.tokenizers import BinActionTokenizer

    return BinActionTokenizer(STATS.action_q01, STATS.action_q99, n_bins=16, horizon=horizon)


def fast_tokenizer(episodes: list[Episode], horizon: int = 2):
    """A FAST tokenizer fitted on the action chunks of ``episodes`` (small vocabulary, coarse scale)."""
    from apo.tokenizers import FASTActionTokenizer, FASTConfig
    from apo.training.base_policy import dataset_chunks

    return FASTActionTokenizer.fit(dataset_chunks(episodes, horizon), STATS.action_q01, STATS.action_q99,
                                   FASTConfig(scale=4.0, vocab_size=64, min_frequency=1))


def unit_policy(seed: int = 0, tokenizer=None):
    """A tiny VLAPolicy (bin tokenizer, horizon 2, unless ``tokenizer`` is given)."""
    from apo.models import VLAPolicy

    torch.manual_seed(seed)
    policy = VLAPolicy.build(tokenizer or bin_tokenizer(), STATS, image_size=IMG, image_grid=2, d_model=32,
                             n_layers=1, n_heads=2)
    g = torch.Generator().manual_seed(zlib.crc32(INSTRUCTION.encode()))
    policy._instructions[INSTRUCTION] = F.normalize(torch.randn(384, generator=g), dim=0)
    return policy


def random_episode(labels, seed: int, source: str = "interaction", with_proposals: bool | None = None) -> Episode:
    """An episode of random images and actions with the given per-step labels."""
    rng = np.random.default_rng(seed)
    T = len(labels)
    proposals = source != "expert" if with_proposals is None else with_proposals
    return Episode(
        task="pick-place-v3", instruction=INSTRUCTION,
        images=rng.integers(0, 256, (T, IMG, IMG, 3), dtype=np.uint8),
        proprio=rng.normal(size=(T, 4)).astype(np.float32), actions=rng.uniform(-1, 1, (T, 4)).astype(np.float32),
        rewards=np.zeros(T, np.float32), dones=np.arange(T) == T - 1, labels=np.asarray(labels, np.int8),
        success=False, seed=seed, source=source,
        policy_actions=rng.uniform(-1, 1, (T, 4)).astype(np.float32) if proposals else None,
    )
