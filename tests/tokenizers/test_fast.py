"""FASTActionTokenizer: DCT round trip with bounded error, padding/EOS/masks, the gripper segment,
malformed sequences, constrained decoding, fitting, serialization, token counts vs the bin tokenizer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from apo.tokenizers import (
    TOKENIZERS, BinActionTokenizer, FASTActionTokenizer, FASTConfig, TokenizerFileError, load_tokenizer, save_tokenizer, tokenizer_from_dict,
)

Q01 = [-0.5, -1.0, 0.0, -0.2]
Q99 = [0.5, 2.0, 0.1, 0.3]


def smooth_chunks(n: int, horizon: int, seed: int = 0, q01=Q01, q99=Q99) -> np.ndarray:
    """Smooth in-range trajectories (sines of random frequency/phase) and a gripper that is -1 or +1."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, horizon)[None, :, None]
    freq, phase, amp = rng.uniform(0.05, 0.4, (n, 1, 3)), rng.uniform(0, 1, (n, 1, 3)), rng.uniform(0.2, 1, (n, 1, 3))
    x = amp * np.sin(2 * np.pi * (freq * t + phase))  # in [-1, 1]
    lo, hi = np.asarray(q01[:3]), np.asarray(q99[:3])
    arm = (x + 1) / 2 * (hi - lo) + lo
    grip = np.where(rng.uniform(size=(n, 1, 1)) < 0.5, -1.0, 1.0) * np.ones((n, horizon, 1))
    return np.concatenate([arm, grip], -1)


@pytest.fixture(scope="module")
def tok() -> FASTActionTokenizer:
    return FASTActionTokenizer.fit(smooth_chunks(3000, 8), Q01, Q99, FASTConfig(scale=10.0, vocab_size=400))


# ----- round trip -----

@pytest.mark.parametrize("horizon,scale", [(1, 10.0), (4, 10.0), (8, 25.0)])
def test_round_trip_error_within_the_dct_bound(horizon, scale):
    chunks = smooth_chunks(2000, horizon, seed=horizon)
    tok = FASTActionTokenizer.fit(chunks[:1000], Q01, Q99, FASTConfig(scale=scale, vocab_size=1024))
    test = chunks[1000:]  # not seen by the BPE
    tokens = tok.encode(test)
    assert tokens.shape == (1000, tok.num_tokens) and tokens.dtype == np.int64
    dec = tok.decode(tokens)
    assert dec.shape == test.shape and dec.dtype == np.float32
    err = np.abs(dec - test)
    # per step: |e| <= 0.5 sqrt(H) / scale (normalized), i.e. max_error() in raw units
    assert (err.reshape(-1, 4) <= tok.max_error() * (1 + 1e-5) + 1e-6).all()
    # RMS over the chunk <= 0.5 / scale (normalized units): the inverse DCT is orthonormal
    norm_err = np.abs(tok.normalize(dec) - tok.normalize(test))
    rms = np.sqrt((norm_err**2).mean(-2))
    assert (rms <= 0.5 / scale + 1e-5).all(), rms.max()
    assert err.max() > 0  # quantization is lossy: the test would notice an identity


def test_round_trip_with_extra_leading_dims(tok):
    chunks = smooth_chunks(10, 8).reshape(2, 5, 8, 4)
    tokens = tok.encode(chunks)
    assert tokens.shape == (2, 5, tok.num_tokens)
    np.testing.assert_array_equal(tok.encode(chunks.reshape(10, 8, 4)), tokens.reshape(10, -1))
    assert tok.decode(tokens).shape == (2, 5, 8, 4)
    assert tok.encode(np.zeros((0, 8, 4))).shape == (0, tok.num_tokens)


def test_constant_chunk_has_only_the_dc_coefficient(tok):
    """The orthonormal DCT of a constant x is sqrt(H) x at frequency 0 and 0 elsewhere."""
    chunk = np.zeros((1, 8, 4))
    chunk[0, :, 0] = 0.25  # normalized 0.5 in [-0.5, 0.5]
    chunk[0, :, 1] = 0.5  # normalized 0.0
    chunk[0, :, 2] = 0.0  # normalized -1
    chunk[0, :, 3] = 1.0  # gripper, native range: +1
    q, why = tok.parse(tok.encode(chunk)[0])
    assert why == ""
    expect_dc = np.rint(10 * math.sqrt(8) * np.array([0.5, 0.0, -1.0, 1.0]))
    np.testing.assert_array_equal(q[0], expect_dc)
    assert (q[1:] == 0).all()


def test_out_of_range_actions_are_clipped(tok):
    chunk = smooth_chunks(1, 8)
    chunk[0, 3, 0] = 50.0
    chunk[0, 5, 1] = -50.0
    dec = tok.decode(tok.encode(chunk))
    assert (dec >= tok.lo - 1e-6).all() and (dec <= tok.hi + 1e-6).all()
    clipped = np.clip(chunk, tok.lo, tok.hi)
    assert (np.abs(dec - clipped) <= tok.max_error() + 1e-6).all()


def test_unseen_noise_never_overflows_and_decodes(tok):
    """White noise (BPE merges hardly apply) still fits num_tokens: the padded length is the worst case."""
    noise = np.random.default_rng(3).uniform(tok.lo, tok.hi, (500, 8, 4))
    tokens = tok.encode(noise)
    assert tok.decodable(tokens).all()
    assert (np.abs(tok.decode(tokens) - noise) <= tok.max_error() + 1e-6).all()
    assert tok.num_tokens == 8 * 4 + 2


# ----- sequence layout and masks -----

def test_layout_eos_padding_and_masks(tok):
    tokens = tok.encode(smooth_chunks(50, 8, seed=1))
    for row in tokens:
        eos = np.flatnonzero(row == tok.eos_id)
        assert len(eos) == 1
        assert (row[eos[0] + 1 :] == tok.pad_id).all()
        assert (row[: eos[0]] != tok.pad_id).all()
        assert (row[: eos[0]] == tok.grip_id).sum() == 1
    mask = tok.token_mask(tokens)
    assert mask.dtype == bool and mask.shape == tokens.shape
    np.testing.assert_array_equal(mask.sum(1), [np.flatnonzero(r == tok.eos_id)[0] + 1 for r in tokens])
    np.testing.assert_array_equal(tok.real_token_counts(tokens), mask.sum(1))
    # the same masks from torch tensors
    t = torch.from_numpy(tokens)
    assert torch.equal(tok.token_mask(t), torch.from_numpy(mask))
    assert torch.equal(tok.gripper_token_mask(t), torch.from_numpy(tok.gripper_token_mask(tokens)))


def test_token_mask_hand_worked(tok):
    P, E, G = tok.pad_id, tok.eos_id, tok.grip_id
    a = 10  # any content token
    tokens = np.full((3, tok.num_tokens), P)
    tokens[0, :4] = [a, G, a, E]
    tokens[1, :3] = [a, a, E]
    tokens[2, :] = a  # no <eos>: everything counts
    expect = np.zeros_like(tokens, bool)
    expect[0, :4] = expect[1, :3] = expect[2, :] = True
    np.testing.assert_array_equal(tok.token_mask(tokens), expect)
    grip = tok.gripper_token_mask(tokens)
    assert np.flatnonzero(grip[0]).tolist() == [2, 3]  # after <grip>, up to and including <eos>
    assert not grip[1].any() and not grip[2].any()


def test_gripper_segment_is_separate(tok):
    """Changing only the gripper changes only the tokens after <grip>, and vice versa."""
    a = smooth_chunks(20, 8, seed=5)
    b = a.copy()
    b[..., 3] = -a[..., 3]  # flip the gripper only
    ta, tb = tok.encode(a), tok.encode(b)
    for ra, rb in zip(ta, tb):
        sa, sb = np.flatnonzero(ra == tok.grip_id)[0], np.flatnonzero(rb == tok.grip_id)[0]
        assert sa == sb and np.array_equal(ra[:sa], rb[:sa])  # arm segment unchanged
        assert not np.array_equal(ra[sa:], rb[sa:])
    c = a.copy()
    c[..., :3] = smooth_chunks(20, 8, seed=6)[..., :3]  # change the arm only
    for ra, rc, ga, gc in zip(ta, tok.encode(c), tok.gripper_token_mask(ta), tok.gripper_token_mask(tok.encode(c))):
        assert np.array_equal(ra[ga], rc[gc])  # identical gripper tokens
    # decoding: the gripper dimension comes only from the gripper segment
    np.testing.assert_allclose(tok.decode(tb)[..., 3], -tok.decode(ta)[..., 3], atol=1e-6)


def test_gripper_mask_needs_tokens(tok):
    with pytest.raises(ValueError, match="pass the tokens"):
        tok.gripper_token_mask()


def test_single_segment_without_gripper_dim():
    chunks = smooth_chunks(500, 4)
    tok = FASTActionTokenizer.fit(chunks, Q01, Q99, FASTConfig(gripper_dim=None, vocab_size=300))
    assert tok.grip_id is None and tok.num_tokens == 4 * 4 + 1
    tokens = tok.encode(chunks)
    assert not tok.gripper_token_mask(tokens).any()
    assert not tok.gripper_token_mask(torch.from_numpy(tokens)).any()
    # the gripper dimension is then normalized with the stats like the others (its +-1 are clipped)
    np.testing.assert_allclose([tok.lo[3], tok.hi[3]], [-0.2, 0.3])
    assert (np.abs(tok.decode(tokens) - np.clip(chunks, tok.lo, tok.hi)) <= tok.max_error() + 1e-6).all()


# ----- malformed sequences -----

def malformed(tok, good: np.ndarray) -> dict[str, np.ndarray]:
    P, E, G = tok.pad_id, tok.eos_id, tok.grip_id
    n = np.flatnonzero(good == E)[0]
    sep = np.flatnonzero(good == G)[0]
    cases = {}
    cases["no end-of-sequence"] = np.where(good == E, P, good)
    x = good.copy(); x[0] = P; cases["padding before"] = x  # noqa: E702
    cases["0 gripper separators"] = np.concatenate([np.delete(good, sep), [P]])
    x = good.copy(); x[n], x[n + 1] = G, E; cases["2 gripper separators"] = x  # noqa: E702
    x = np.concatenate([np.delete(good, 0), [P]]); cases["arm segment expands"] = x  # noqa: E702
    x = good.copy(); x[n], x[n + 1] = x[n - 1], E; cases["gripper segment expands"] = x  # noqa: E702
    return cases


def test_malformed_sequences_decode_to_nan_and_raise_with_reason(tok):
    good = tok.encode(smooth_chunks(1, 8, seed=2))[0]
    cases = malformed(tok, good)
    batch = np.stack([good, *cases.values(), good])
    dec = tok.decode(batch)
    ok = np.isfinite(dec).all((-1, -2))
    assert ok.tolist() == [True] + [False] * len(cases) + [True]  # only the malformed rows are NaN
    assert np.isnan(dec[1:-1]).all()
    np.testing.assert_array_equal(tok.decodable(batch), ok)
    for reason, row in cases.items():
        with pytest.raises(ValueError, match=reason):
            tok.decode(row[None], errors="raise")
    with pytest.raises(ValueError, match="errors must be"):
        tok.decode(batch, errors="ignore")


def test_content_after_eos_is_ignored(tok):
    good = tok.encode(smooth_chunks(1, 8, seed=2))[0]
    n = np.flatnonzero(good == tok.eos_id)[0]
    junk = good.copy()
    junk[n + 1 :] = 10
    np.testing.assert_array_equal(tok.decode(junk[None]), tok.decode(good[None]))


def test_decode_input_validation(tok):
    with pytest.raises(ValueError, match="tokens must have shape"):
        tok.decode(np.zeros((2, 5), np.int64))
    with pytest.raises(ValueError, match="integers"):
        tok.decode(np.zeros((2, tok.num_tokens), np.float32))
    with pytest.raises(ValueError, match=rf"\[0, {tok.vocab_size}\)"):
        tok.decode(np.full((1, tok.num_tokens), tok.vocab_size))


# ----- constrained decoding -----

def test_constrained_random_decoding_is_always_well_formed(tok):
    g = torch.Generator().manual_seed(0)
    B = 300
    prefix = torch.zeros(B, 0, dtype=torch.long)
    for _ in range(tok.num_tokens):
        allowed = tok.next_token_mask(prefix)
        assert allowed.shape == (B, tok.vocab_size) and allowed.any(1).all()
        logits = torch.randn(B, tok.vocab_size, generator=g) * 3
        nxt = torch.multinomial(torch.softmax(logits.masked_fill(~allowed, -math.inf), -1), 1, generator=g)
        prefix = torch.cat([prefix, nxt], 1)
    assert tok.decodable(prefix.numpy()).all()


def test_next_token_mask_forces_separator_eos_and_padding(tok):
    row = torch.from_numpy(tok.encode(smooth_chunks(1, 8, seed=4)))
    sep = int((row[0] == tok.grip_id).nonzero()[0])
    eos = int((row[0] == tok.eos_id).nonzero()[0])
    for i, expect in ((sep, tok.grip_id), (eos, tok.eos_id), (eos + 1, tok.pad_id)):
        allowed = tok.next_token_mask(row[:, :i])[0]
        assert allowed.sum() == 1 and allowed[expect], i
    first = tok.next_token_mask(row[:, :0])[0]
    assert not first[[tok.pad_id, tok.eos_id, tok.grip_id]].any() and first.sum() > 1
    # every actual next token of a real sequence is allowed
    for i in range(eos + 1):
        assert tok.next_token_mask(row[:, :i])[0, row[0, i]]


# ----- token counts vs the bin tokenizer -----

def test_fewer_tokens_than_bins_on_smooth_chunks(tok):
    chunks = smooth_chunks(1000, 8, seed=9)
    bins = BinActionTokenizer(Q01, Q99, n_bins=256, horizon=8)
    fast_counts = tok.real_token_counts(tok.encode(chunks))
    assert bins.num_tokens == 32
    assert fast_counts.mean() < 0.5 * bins.num_tokens, fast_counts.mean()
    assert fast_counts.max() <= tok.num_tokens


@pytest.mark.slow
def test_fewer_tokens_than_bins_on_expert_demonstrations(tiny_episodes, tiny_stats):
    from apo.training.base_policy import dataset_chunks

    chunks = dataset_chunks(tiny_episodes, 4)
    tok = FASTActionTokenizer.fit(chunks, tiny_stats.action_q01, tiny_stats.action_q99, FASTConfig(vocab_size=300))
    tokens = tok.encode(chunks)
    assert tok.real_token_counts(tokens).mean() < 4 * 4
    assert (np.abs(tok.decode(tokens) - np.clip(chunks, tok.lo, tok.hi)) <= tok.max_error() + 1e-6).all()


# ----- fitting, validation, serialization -----

def test_fit_validation():
    chunks = smooth_chunks(50, 4)
    with pytest.raises(ValueError, match="vocab-size >= "):
        FASTActionTokenizer.fit(chunks, Q01, Q99, FASTConfig(scale=10.0, vocab_size=20))
    with pytest.raises(ValueError, match=r"\(M, H, D\)"):
        FASTActionTokenizer.fit(chunks[0], Q01, Q99)
    with pytest.raises(ValueError, match="actions must have shape"):
        FASTActionTokenizer.fit(chunks[..., :3], Q01, Q99)
    with pytest.raises(ValueError, match="smaller --fast.scale"):
        FASTActionTokenizer.fit(chunks, Q01, Q99, FASTConfig(scale=1e5, vocab_size=10**6))


@pytest.mark.parametrize("kwargs", [dict(scale=0.0), dict(scale=float("nan")), dict(min_frequency=0),
                                    dict(vocab_size=3), dict(gripper_dim=-1)])
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        FASTConfig(**kwargs)


def test_fit_is_deterministic():
    chunks = smooth_chunks(300, 4)
    a = FASTActionTokenizer.fit(chunks, Q01, Q99, FASTConfig(vocab_size=200))
    b = FASTActionTokenizer.fit(chunks, Q01, Q99, FASTConfig(vocab_size=200))
    assert a.to_dict() == b.to_dict()


def test_to_dict_from_dict_and_file_round_trip(tok, tmp_path):
    d = json.loads(json.dumps(tok.to_dict()))
    assert d["kind"] == "fast"
    back = tokenizer_from_dict(d)
    assert isinstance(back, FASTActionTokenizer) and back.to_dict() == tok.to_dict()
    chunks = smooth_chunks(100, 8, seed=11)
    np.testing.assert_array_equal(back.encode(chunks), tok.encode(chunks))
    loaded = load_tokenizer(save_tokenizer(tok, tmp_path / "t.json"))
    np.testing.assert_array_equal(loaded.encode(chunks), tok.encode(chunks))
    assert TOKENIZERS.get("fast") is FASTActionTokenizer


def test_corrupt_or_mismatched_bpe_is_refused(tok, tmp_path):
    d = tok.to_dict()
    with pytest.raises(ValueError, match="corrupt"):
        tokenizer_from_dict({**d, "bpe": "{not json"})
    with pytest.raises(ValueError, match="refit"):  # fitted for scale 10: its symbols do not cover scale 40
        tokenizer_from_dict({**d, "scale": 40.0})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(TokenizerFileError, match="not valid JSON"):
        load_tokenizer(tmp_path / "bad.json")
    with pytest.raises(TokenizerFileError, match="apo fit-tokenizer"):
        load_tokenizer(tmp_path / "missing.json")
