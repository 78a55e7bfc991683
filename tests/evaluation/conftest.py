"""Fixtures of the evaluation tests: a tiny untrained policy saved to disk (no sentence encoder)."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
import torch

from apo.envs import get_task

EVAL_TASK = "pick-place-v3"


@pytest.fixture(scope="module")
def saved_tiny_policy(tmp_path_factory) -> Path:
    """A tiny VLAPolicy (d_model 32, 1 layer, horizon 2, 64 px) saved to a folder, with a made-up
    instruction embedding for pick-place (shared by its perturbed variants), so loading and
    deploying it never loads the sentence encoder."""
    from apo.data import DatasetStats
    from apo.models import VLAPolicy
    from apo.tokenizers import BinActionTokenizer

    stats = DatasetStats(action_q01=[-1.0] * 4, action_q99=[1.0] * 4, proprio_mean=[0.0, 0.6, 0.15, 0.5],
                         proprio_std=[0.1, 0.1, 0.1, 0.5], num_steps=100)
    tok = BinActionTokenizer(stats.action_q01, stats.action_q99, n_bins=32, horizon=2)
    torch.manual_seed(0)
    policy = VLAPolicy.build(tok, stats, image_size=64, d_model=32, n_layers=1, n_heads=2)
    instruction = get_task(EVAL_TASK).instruction
    g = torch.Generator().manual_seed(zlib.crc32(instruction.encode()))
    v = torch.randn(384, generator=g)
    policy._instructions[instruction] = v / v.norm()
    return policy.save(tmp_path_factory.mktemp("tiny_policy") / "policy")
