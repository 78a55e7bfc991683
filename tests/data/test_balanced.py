"""BalancedSampler: fixed bucket shares per batch, without replacement within a bucket,
resumable state, and distributed slicing of one global batch."""

from __future__ import annotations

import io
from collections import Counter
import math
import warnings

import pytest
import torch

from apo.data.balanced import BalancedSampler, BucketShares
from apo.data.dataset import AUTONOMOUS, CORRECTION, EXPERT, UNDESIRABLE


def make_categories(expert=40, autonomous=20, correction=12, undesirable=10, seed=0) -> torch.Tensor:
    cats = torch.tensor([EXPERT] * expert + [AUTONOMOUS] * autonomous + [CORRECTION] * correction
                        + [UNDESIRABLE] * undesirable)
    return cats[torch.randperm(len(cats), generator=torch.Generator().manual_seed(seed))]  # buckets interleaved


def bucket_of(cats: torch.Tensor, idx: torch.Tensor) -> list[str]:
    names = {EXPERT: "desirable", AUTONOMOUS: "desirable", CORRECTION: "correction", UNDESIRABLE: "undesirable"}
    return [names[int(c)] for c in cats[idx]]


def test_batch_composition_matches_shares():
    cats = make_categories()
    s = BalancedSampler(cats, 32, seed=0)
    assert s.counts == {"correction": 8, "undesirable": 8, "desirable": 16}
    for _ in range(10):
        idx = s.sample()
        assert idx.shape == (32,) and idx.dtype == torch.long
        b = bucket_of(cats, idx)
        assert b.count("desirable") == 16 and b.count("correction") == 8 and b.count("undesirable") == 8
        # desirable = expert + autonomous steps
        assert set(cats[idx].tolist()) <= {EXPERT, AUTONOMOUS, CORRECTION, UNDESIRABLE}


def test_custom_shares_and_rounding():
    cats = make_categories()
    s = BalancedSampler(cats, 10, BucketShares(desirable=0.6, correction=0.3, undesirable=0.1), seed=1)
    assert s.counts == {"correction": 3, "undesirable": 1, "desirable": 6}
    b = bucket_of(cats, s.sample())
    assert (b.count("desirable"), b.count("correction"), b.count("undesirable")) == (6, 3, 1)


def test_without_replacement_within_a_bucket_over_one_pass():
    cats = make_categories()
    s = BalancedSampler(cats, 32, seed=3)
    draws = {"desirable": [], "correction": [], "undesirable": []}
    for _ in range(8):
        idx = s.sample()
        for i, name in zip(idx.tolist(), bucket_of(cats, idx)):
            draws[name].append(i)
    for name, members in (("desirable", (cats == EXPERT) | (cats == AUTONOMOUS)),
                          ("correction", cats == CORRECTION), ("undesirable", cats == UNDESIRABLE)):
        bucket = sorted(torch.nonzero(members).flatten().tolist())
        n = len(bucket)
        seen = draws[name]
        # every full pass is a permutation of the bucket: no repeats before all were drawn
        for p in range(len(seen) // n):
            assert sorted(seen[p * n:(p + 1) * n]) == bucket, (name, p)


def test_steps_per_epoch():
    cats = make_categories()  # desirable 60 / 16 per batch, correction 12 / 8, undesirable 10 / 8
    s = BalancedSampler(cats, 32, seed=0)
    assert s.steps_per_epoch == max(math.ceil(60 / 16), math.ceil(12 / 8), math.ceil(10 / 8)) == 4
    # after steps_per_epoch batches every bucket (also the largest relative to its share) was fully seen
    seen = torch.cat([s.sample() for _ in range(s.steps_per_epoch)])
    assert set(seen.tolist()) == set(range(len(cats)))
    # a bucket with a zero count (empty) does not enter the epoch length
    only_desirable = torch.tensor([EXPERT] * 6 + [AUTONOMOUS] * 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert BalancedSampler(only_desirable, 4, seed=0).steps_per_epoch == 2


def test_empty_correction_bucket_warns_and_gives_its_share_to_desirable():
    cats = make_categories(correction=0)
    with pytest.warns(UserWarning, match="no correction steps"):
        s = BalancedSampler(cats, 32, seed=0)
    assert s.counts == {"correction": 0, "undesirable": 8, "desirable": 24}
    b = bucket_of(cats, s.sample())
    assert b.count("desirable") == 24 and b.count("undesirable") == 8 and len(b) == 32


def test_empty_undesirable_bucket_warns():
    cats = make_categories(undesirable=0)
    with pytest.warns(UserWarning, match="no undesirable steps"):
        s = BalancedSampler(cats, 16, seed=0)
    assert s.counts == {"correction": 4, "undesirable": 0, "desirable": 12}


def test_no_warning_when_buckets_are_present():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BalancedSampler(make_categories(), 32)


def test_no_desirable_steps_raises():
    cats = torch.tensor([CORRECTION] * 5 + [UNDESIRABLE] * 5)
    with pytest.raises(ValueError, match="no desirable steps"):
        BalancedSampler(cats, 8)


@pytest.mark.parametrize("shares", [(0.5, 0.25, 0.3), (1.2, -0.1, -0.1), (0.0, 0.0, 0.0)])
def test_bad_shares_raise(shares):
    with pytest.raises(ValueError, match="shares"):
        BucketShares(*shares)


def test_batch_size_not_divisible_by_world_size_raises():
    with pytest.raises(ValueError, match="divisible"):
        BalancedSampler(make_categories(), 30, world_size=4)


def test_state_dict_round_trip_continues_the_same_sequence():
    cats = make_categories()
    a = BalancedSampler(cats, 32, seed=5)
    for _ in range(3):  # mid-pass in every bucket
        a.sample()
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)  # as in a training checkpoint
    expected = [a.sample() for _ in range(6)]
    b = BalancedSampler(cats, 32, seed=123)  # a different seed: the state must override it
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=False))
    for e in expected:
        assert torch.equal(b.sample(), e)


def test_same_seed_same_sequence_different_seed_differs():
    cats = make_categories()
    a, b, c = BalancedSampler(cats, 32, seed=1), BalancedSampler(cats, 32, seed=1), BalancedSampler(cats, 32, seed=2)
    sa = [a.sample() for _ in range(3)]
    assert all(torch.equal(x, b.sample()) for x in sa)
    assert not all(torch.equal(x, c.sample()) for x in sa)


def test_world_size_two_slices_are_disjoint_and_cover_the_global_batch():
    cats = make_categories()
    full = BalancedSampler(cats, 32, seed=9)
    r0 = BalancedSampler(cats, 32, seed=9, rank=0, world_size=2)
    r1 = BalancedSampler(cats, 32, seed=9, rank=1, world_size=2)
    for step in range(5):
        g = full.sample_global()
        a, b = r0.sample(), r1.sample()
        assert len(a) == len(b) == 16
        # the two slices are complementary positions of the same global batch
        assert torch.equal(a, g[0::2]) and torch.equal(b, g[1::2])
        assert Counter(a.tolist()) + Counter(b.tolist()) == Counter(g.tolist())
        if step == 0:  # no bucket wrapped around yet: the global batch has no repeated step
            assert len(set(g.tolist())) == 32
            assert set(a.tolist()).isdisjoint(b.tolist())
        # every process sees every bucket, in proportion
        for part in (a, b):
            bk = bucket_of(cats, part)
            assert (bk.count("desirable"), bk.count("correction"), bk.count("undesirable")) == (8, 4, 4)
