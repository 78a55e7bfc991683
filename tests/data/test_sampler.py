"""UniformSampler: determinism, subsets, state_dict round trip."""

from __future__ import annotations

import pytest
import torch

from apo.data.sampler import UniformSampler


def test_same_seed_same_sequence_different_seed_differs():
    a, b, c = UniformSampler(100, 16, seed=3), UniformSampler(100, 16, seed=3), UniformSampler(100, 16, seed=4)
    sa = [a.sample() for _ in range(3)]
    sb = [b.sample() for _ in range(3)]
    sc = [c.sample() for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(sa, sb))
    assert not all(torch.equal(x, y) for x, y in zip(sa, sc))


def test_samples_are_in_range_and_batch_sized():
    s = UniformSampler(7, 50, seed=0)
    idx = s.sample()
    assert idx.shape == (50,) and idx.dtype == torch.long
    assert idx.min() >= 0 and idx.max() < 7
    assert len(idx.unique()) > 1


def test_subset():
    subset = torch.tensor([3, 10, 42])
    s = UniformSampler(100, 64, seed=0, subset=subset)
    idx = s.sample()
    assert set(idx.tolist()) <= {3, 10, 42}
    assert len(set(idx.tolist())) == 3  # 64 draws from 3: all appear


def test_state_dict_round_trip():
    s = UniformSampler(1000, 8, seed=1)
    s.sample()
    state = s.state_dict()
    first = [s.sample() for _ in range(4)]
    s.load_state_dict(state)
    again = [s.sample() for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    # loading into a fresh sampler (as on resume) continues the same sequence
    fresh = UniformSampler(1000, 8, seed=99)
    fresh.load_state_dict(state)
    assert all(torch.equal(x, fresh.sample()) for x in first)


def test_validation():
    with pytest.raises(ValueError, match="batch_size"):
        UniformSampler(10, 0)
    with pytest.raises(ValueError, match="empty"):
        UniformSampler(0, 4)
    with pytest.raises(ValueError, match="empty"):
        UniformSampler(10, 4, subset=torch.tensor([], dtype=torch.long))


def test_shard_and_shard_positions():
    from apo.data.sampler import shard, shard_positions

    g = torch.arange(100, 112)
    parts = [shard(g, r, 3) for r in range(3)]
    assert [p.tolist() for p in parts] == [[100, 103, 106, 109], [101, 104, 107, 110], [102, 105, 108, 111]]
    for r, p in enumerate(parts):
        assert torch.equal(g[shard_positions(len(p), r, 3)], p)
    assert torch.equal(shard(g, 0, 1), g) and torch.equal(shard_positions(12, 0, 1), torch.arange(12))
