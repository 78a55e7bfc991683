"""BinActionTokenizer: round-trip error bound, clipping, gripper range, masks, validation, serialization."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apo.registry import UnknownNameError
from apo.tokenizers import TOKENIZERS, BinActionTokenizer, tokenizer_from_dict

Q01 = [-0.5, -1.0, 0.0, -0.2]
Q99 = [0.5, 2.0, 0.1, 0.3]


def make(horizon=1, n_bins=256, gripper_dim=3):
    return BinActionTokenizer(Q01, Q99, n_bins=n_bins, horizon=horizon, gripper_dim=gripper_dim)


def in_range_actions(tok, shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(tok.lo, tok.hi, size=(*shape, tok.horizon, tok.action_dim))


def test_ranges_and_max_error():
    tok = make(n_bins=100)
    np.testing.assert_allclose(tok.lo, [-0.5, -1.0, 0.0, -1.0])  # gripper: native [-1, 1]
    np.testing.assert_allclose(tok.hi, [0.5, 2.0, 0.1, 1.0])
    np.testing.assert_allclose(tok.max_error(), [0.005, 0.015, 0.0005, 0.01])
    assert tok.vocab_size == 100 and tok.num_tokens == 4


@pytest.mark.parametrize("horizon", [1, 2, 5])
@pytest.mark.parametrize("n_bins", [7, 256])
def test_round_trip_within_half_a_bin(horizon, n_bins):
    tok = make(horizon=horizon, n_bins=n_bins)
    actions = in_range_actions(tok, (500,), seed=horizon)
    tokens = tok.encode(actions)
    assert tokens.shape == (500, horizon * 4) and tokens.dtype == np.int64
    decoded = tok.decode(tokens)
    assert decoded.shape == actions.shape and decoded.dtype == np.float32
    err = np.abs(decoded - actions).reshape(-1, 4)
    bound = tok.max_error()
    assert (err <= bound * (1 + 1e-5) + 1e-7).all(), (err.max(0), bound)
    # the bound is tight: errors close to half a bin do occur (decode returns bin centres)
    assert (err.max(0) > 0.9 * bound).all()


def test_round_trip_with_extra_leading_dims():
    tok = make(horizon=3, n_bins=64)
    actions = in_range_actions(tok, (2, 5))
    tokens = tok.encode(actions)
    assert tokens.shape == (2, 5, 12)
    np.testing.assert_array_equal(tok.encode(actions.reshape(10, 3, 4)), tokens.reshape(10, 12))
    assert tok.decode(tokens).shape == (2, 5, 3, 4)


def test_tokens_are_action_major():
    tok = make(horizon=2, n_bins=10)
    actions = np.array([tok.lo, tok.lo])[None].copy()  # all at the bottom of their range: token 0
    actions[0, 1, 0] = tok.hi[0]  # a1_x at the top: token 9 at position 4 (= 1 * D + 0)
    assert tok.encode(actions)[0].tolist() == [0, 0, 0, 0, 9, 0, 0, 0]


def test_bin_edges():
    tok = make(n_bins=4)
    # normalized x in [-1, 1]: bins [-1,-.5), [-.5,0), [0,.5), [.5,1]; dim 0 has range [-0.5, 0.5]
    xs = np.array([-0.5, -0.2501, -0.2499, 0.0, 0.2499, 0.25, 0.5])
    acts = np.zeros((len(xs), 1, 4))
    acts[:, 0, 0] = xs
    assert tok.encode(acts)[:, 0].tolist() == [0, 0, 1, 2, 2, 3, 3]
    # decode gives bin centres
    np.testing.assert_allclose(tok.decode(np.array([[0, 0, 0, 0], [3, 0, 0, 0]]))[:, 0, 0], [-0.375, 0.375])


def test_out_of_range_is_clipped():
    tok = make(n_bins=50)
    actions = np.array([[[10.0, -10.0, 5.0, 3.0]], [[-10.0, 10.0, -5.0, -3.0]]])
    tokens = tok.encode(actions)
    assert tokens.tolist() == [[49, 0, 49, 49], [0, 49, 0, 0]]
    decoded = tok.decode(tokens)
    half = tok.max_error()
    np.testing.assert_allclose(decoded[0, 0], np.array([tok.hi[0], tok.lo[1], tok.hi[2], tok.hi[3]]) + [-half[0], half[1], -half[2], -half[3]], rtol=1e-6)
    np.testing.assert_allclose(decoded[1, 0], np.array([tok.lo[0], tok.hi[1], tok.lo[2], tok.lo[3]]) + [half[0], -half[1], half[2], half[3]], rtol=1e-6)


def test_tokens_always_in_vocab():
    tok = make(horizon=2, n_bins=13)
    actions = np.random.default_rng(0).normal(scale=5.0, size=(1000, 2, 4))
    tokens = tok.encode(actions)
    assert tokens.min() == 0 and tokens.max() == 12


def test_gripper_uses_native_range_regardless_of_stats():
    tok = make(n_bins=256)  # gripper q01/q99 = [-0.2, 0.3]
    g = np.array([-0.95, -0.5, 0.9, 1.0])
    acts = np.zeros((4, 1, 4))
    acts[:, 0, 3] = g
    dec = tok.decode(tok.encode(acts))[:, 0, 3]
    np.testing.assert_allclose(dec, g, atol=1.0 / 256 + 1e-6)  # half a bin of [-1, 1]
    # without a gripper dim, the same values are clipped to the stats' range
    plain = make(n_bins=256, gripper_dim=None)
    dec_plain = plain.decode(plain.encode(acts))[:, 0, 3]
    assert dec_plain.max() < 0.3 and dec_plain.min() > -0.2


def test_constant_dimension_gets_a_range():
    tok = BinActionTokenizer([0.25, -1, -1, -1], [0.25, 1, 1, 1], n_bins=256)
    acts = np.array([[[0.25, 0.0, 0.0, 0.0]]])
    dec = tok.decode(tok.encode(acts))
    assert np.isfinite(dec).all()
    assert abs(dec[0, 0, 0] - 0.25) <= 1e-4


@pytest.mark.parametrize("horizon,dim,expected", [(1, 4, [3]), (2, 4, [3, 7]), (3, 4, [3, 7, 11])])
def test_gripper_token_mask(horizon, dim, expected):
    tok = BinActionTokenizer([-1] * dim, [1] * dim, horizon=horizon, gripper_dim=dim - 1)
    mask = tok.gripper_token_mask()
    assert mask.dtype == bool and mask.shape == (horizon * dim,)
    assert np.flatnonzero(mask).tolist() == expected


def test_gripper_token_mask_other_dim_and_none():
    tok = BinActionTokenizer([-1] * 4, [1] * 4, horizon=2, gripper_dim=0)
    assert np.flatnonzero(tok.gripper_token_mask()).tolist() == [0, 4]
    assert not BinActionTokenizer([-1] * 4, [1] * 4, horizon=2, gripper_dim=None).gripper_token_mask().any()


@pytest.mark.parametrize("horizon,shape", [(1, (4,)), (1, (1, 3)), (3, (2, 4)), (1, (1, 1, 5)), (2, (5, 1, 4))])
def test_encode_bad_shapes(horizon, shape):
    with pytest.raises(ValueError, match="actions must have shape"):
        make(horizon=horizon).encode(np.zeros(shape))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_encode_nonfinite(bad):
    acts = np.zeros((2, 1, 4))
    acts[1, 0, 2] = bad
    with pytest.raises(ValueError, match="NaN"):
        make().encode(acts)


def test_decode_validation():
    tok = make(horizon=2, n_bins=16)
    with pytest.raises(ValueError, match="tokens must have shape"):
        tok.decode(np.zeros((3, 4), np.int64))
    with pytest.raises(ValueError, match="integers"):
        tok.decode(np.zeros((3, 8), np.float32))
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        tok.decode(np.full((1, 8), 16))
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        tok.decode(np.full((1, 8), -1))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(q01=[0.0, 1.0], q99=[1.0, 0.5]),  # q99 < q01
        dict(q01=[0.0, 0.0], q99=[1.0]),
        dict(q01=[[0.0]], q99=[[1.0]]),
        dict(q01=[0.0], q99=[1.0], n_bins=1, gripper_dim=None),
        dict(q01=[0.0], q99=[1.0], horizon=0, gripper_dim=None),
        dict(q01=[0.0, 0.0], q99=[1.0, 1.0], gripper_dim=2),
    ],
)
def test_constructor_validation(kwargs):
    kwargs.setdefault("gripper_dim", None)
    with pytest.raises(ValueError):
        BinActionTokenizer(**kwargs)


def test_q99_below_q01_message():
    with pytest.raises(ValueError, match="q99 must be >= q01"):
        BinActionTokenizer([0.0, 0.0, 0.0, 0.0], [1.0, -0.1, 1.0, 1.0])


def test_to_dict_from_dict_round_trip():
    tok = make(horizon=3, n_bins=31, gripper_dim=1)
    d = json.loads(json.dumps(tok.to_dict()))  # it must survive JSON
    assert d["kind"] == "bin"
    back = tokenizer_from_dict(d)
    assert isinstance(back, BinActionTokenizer)
    assert (back.horizon, back.n_bins, back.gripper_dim, back.action_dim) == (3, 31, 1, 4)
    np.testing.assert_array_equal(back.lo, tok.lo)
    np.testing.assert_array_equal(back.hi, tok.hi)
    actions = np.random.default_rng(0).uniform(-2, 2, (50, 3, 4))
    np.testing.assert_array_equal(back.encode(actions), tok.encode(actions))
    assert back.to_dict() == tok.to_dict()


def test_tokenizer_registry():
    assert TOKENIZERS.get("bin") is BinActionTokenizer
    with pytest.raises(UnknownNameError, match="'bin'|bin") as exc:
        TOKENIZERS.get("vq")
    valid = str(exc.value).split("Valid names:")[1]
    assert "bin" in valid and "fast" in valid
    with pytest.raises(UnknownNameError, match="bin"):
        tokenizer_from_dict({"kind": "vq"})
    with pytest.raises(ValueError, match="kind"):
        tokenizer_from_dict({"q01": [0.0]})
