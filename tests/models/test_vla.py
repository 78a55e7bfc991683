"""TinyVLA: KV-cache decoding, teacher forcing, log-probs, input validation, attention structure."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from apo.models import LANG_DIM, TinyVLA, VLAConfig

CFG = VLAConfig(image_size=64, d_model=32, n_layers=2, n_heads=2, vocab_size=16, num_action_tokens=6)


@pytest.fixture(scope="module")
def model() -> TinyVLA:
    torch.manual_seed(0)
    m = TinyVLA(CFG).eval()
    # non-trivial proprio normalization, so a bug that skips it is visible
    m.proprio_mean.copy_(torch.tensor([0.1, 0.6, 0.2, 0.5]))
    m.proprio_std.copy_(torch.tensor([0.1, 0.1, 0.05, 0.5]))
    return m


def inputs(B=3, seed=0, cfg=CFG):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (B, cfg.image_size, cfg.image_size, 3), generator=g, dtype=torch.uint8)
    lang = torch.nn.functional.normalize(torch.randn(B, LANG_DIM, generator=g), dim=-1)
    proprio = torch.randn(B, cfg.proprio_dim, generator=g)
    tokens = torch.randint(0, cfg.vocab_size, (B, cfg.num_action_tokens), generator=g)
    return images, lang, proprio, tokens


def test_logits_shape_and_bos(model):
    images, lang, proprio, tokens = inputs()
    logits = model(images, lang, proprio, tokens)
    assert logits.shape == (3, CFG.num_action_tokens, CFG.vocab_size)
    assert model.bos_id == CFG.vocab_size
    assert model.token_emb.num_embeddings == CFG.vocab_size + 1
    assert torch.isfinite(logits).all()


def test_kv_cache_decode_equals_full_decode(model):
    images, lang, proprio, _ = inputs(B=4, seed=1)
    tok_c, ent_c = model.generate(images, lang, proprio, use_cache=True)
    tok_n, ent_n = model.generate(images, lang, proprio, use_cache=False)
    assert tok_c.shape == ent_c.shape == (4, CFG.num_action_tokens)
    assert torch.equal(tok_c, tok_n)
    torch.testing.assert_close(ent_c, ent_n, atol=1e-5, rtol=1e-5)
    assert (ent_c > 0).all() and (ent_c <= torch.log(torch.tensor(float(CFG.vocab_size))) + 1e-5).all()


def test_teacher_forced_argmax_equals_greedy_generation(model):
    images, lang, proprio, _ = inputs(B=4, seed=2)
    tokens, entropy = model.generate(images, lang, proprio)
    logits = model(images, lang, proprio, tokens)
    assert torch.equal(logits.argmax(-1), tokens)
    logp = torch.log_softmax(logits, -1)
    torch.testing.assert_close(entropy, -(logp.exp() * logp).sum(-1), atol=1e-5, rtol=1e-5)


def test_sampling_with_generator_is_reproducible(model):
    images, lang, proprio, _ = inputs(B=2, seed=3)
    a, _ = model.generate(images, lang, proprio, temperature=1.0, generator=torch.Generator().manual_seed(7))
    b, _ = model.generate(images, lang, proprio, temperature=1.0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() < CFG.vocab_size


def test_log_prob_is_log_softmax_gather(model):
    images, lang, proprio, tokens = inputs(B=3, seed=4)
    lp = model.log_prob(images, lang, proprio, tokens)
    assert lp.shape == (3, CFG.num_action_tokens)
    logits = model(images, lang, proprio, tokens)
    expected = torch.stack([
        torch.stack([torch.log_softmax(logits[b, i], -1)[tokens[b, i]] for i in range(tokens.shape[1])])
        for b in range(tokens.shape[0])
    ])
    torch.testing.assert_close(lp, expected)
    assert (lp < 0).all()


def test_log_prob_is_differentiable(model):
    images, lang, proprio, tokens = inputs(B=2, seed=5)
    m = TinyVLA(CFG)
    m.log_prob(images, lang, proprio, tokens).sum().backward()
    assert m.head.weight.grad is not None and m.head.weight.grad.abs().sum() > 0
    assert m.image_encoder.net[0].weight.grad.abs().sum() > 0


def test_uint8_and_float_images_agree(model):
    images, lang, proprio, tokens = inputs(B=2, seed=6)
    torch.testing.assert_close(model(images, lang, proprio, tokens), model(images.float(), lang, proprio, tokens))


@pytest.mark.parametrize(
    "which,bad,match",
    [
        ("images", torch.zeros(3, 32, 32, 3, dtype=torch.uint8), "images must be"),
        ("images", torch.zeros(3, 3, 64, 64, dtype=torch.uint8), "images must be"),
        ("lang", torch.zeros(3, 100), "language embeddings must be"),
        ("lang", torch.zeros(2, LANG_DIM), "language embeddings must be"),
        ("proprio", torch.zeros(3, 7), "proprio must be"),
        ("proprio", torch.zeros(3), "proprio must be"),
        ("tokens", torch.zeros(3, CFG.num_action_tokens + 1, dtype=torch.long), "action tokens must be"),
        ("tokens", torch.zeros(3, dtype=torch.long), "action tokens must be"),
    ],
)
def test_bad_shapes_raise_clear_errors(model, which, bad, match):
    args = dict(zip(("images", "lang", "proprio", "tokens"), inputs(B=3)))
    args[which] = bad
    with pytest.raises(ValueError, match=match):
        model(**args)
    if which != "tokens":
        with pytest.raises(ValueError, match=match):
            model.generate(args["images"], args["lang"], args["proprio"])


def test_action_positions_are_causal(model):
    images, lang, proprio, tokens = inputs(B=2, seed=7)
    base = model(images, lang, proprio, tokens)
    N = CFG.num_action_tokens
    for k in range(N):
        changed = tokens.clone()
        changed[:, k] = (changed[:, k] + 5) % CFG.vocab_size
        out = model(images, lang, proprio, changed)
        # position i predicts token i from tokens < i: positions <= k are unaffected by token k
        torch.testing.assert_close(out[:, : k + 1], base[:, : k + 1], atol=1e-6, rtol=0)
        if k + 1 < N:  # ...and the next position does see it
            assert (out[:, k + 1] - base[:, k + 1]).abs().max() > 1e-4


def test_prefix_conditions_every_action_position(model):
    images, lang, proprio, tokens = inputs(B=2, seed=8)
    base = model(images, lang, proprio, tokens)
    for changed in (
        (images.flip(1), lang, proprio),
        (images, lang.roll(1, dims=-1), proprio),
        (images, lang, proprio + 1.0),
    ):
        out = model(*changed, tokens)
        assert ((out - base).abs().amax(-1) > 1e-5).all()


def test_prefix_attention_is_bidirectional_and_blind_to_actions(model):
    """Inspect the first block's outputs at prefix positions: image patches (first in the sequence)
    must see the later proprio token; no prefix position may see action tokens."""
    P = CFG.prefix_len
    captured = []
    handle = model.blocks[0].register_forward_hook(lambda m, i, o: captured.append(o[:, :P].detach().clone()))
    try:
        images, lang, proprio, tokens = inputs(B=2, seed=9)
        model(images, lang, proprio, tokens)
        model(images, lang, proprio + 1.0, tokens)
        model(images, lang, proprio, (tokens + 3) % CFG.vocab_size)
    finally:
        handle.remove()
    base, prop_changed, tok_changed = captured
    n_img = CFG.image_grid**2
    assert ((prop_changed[:, :n_img] - base[:, :n_img]).abs().amax(-1) > 1e-5).all()  # bidirectional
    torch.testing.assert_close(tok_changed, base, atol=0, rtol=0)  # prefix never attends to actions


def test_attention_mask_structure(model):
    P, N = CFG.prefix_len, CFG.num_action_tokens
    m = model.attn_mask
    assert m.shape == (P + N, P + N) and m.dtype == torch.bool
    assert m[:P, :P].all()
    assert not m[:P, P:].any()
    assert m[P:, :P].all()
    assert torch.equal(m[P:, P:], torch.ones(N, N, dtype=torch.bool).tril())
    assert "attn_mask" not in model.state_dict()  # derived, not saved


def test_lora_target_names_exist(model):
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"} <= names


@pytest.mark.parametrize(
    "kwargs",
    [dict(d_model=30, n_heads=4), dict(image_size=40), dict(image_size=8), dict(image_grid=0), dict(dropout=1.0)],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        VLAConfig(**kwargs)


def test_image_grid_is_checked_against_the_image_size_when_the_network_is_built():
    # the CLI parses the recipe before the data's image size is known: 6 must parse, and fail only on 64 px
    cfg = VLAConfig(image_grid=6, d_model=32, n_layers=1, n_heads=2, vocab_size=16, num_action_tokens=6)
    with pytest.raises(ValueError, match="image-grid 4 or less"):
        TinyVLA(cfg)
    model = TinyVLA(dataclasses.replace(cfg, image_size=96))
    prefix = model.embed_prefix(torch.zeros(2, 96, 96, 3, dtype=torch.uint8), torch.zeros(2, LANG_DIM), torch.zeros(2, 4))
    assert prefix.shape == (2, 6 * 6 + 2, 32)


def test_prefix_len():
    assert VLAConfig(image_grid=3, image_size=64).prefix_len == 11


# ----- constrained decoding (variable-length tokenizers) -----

def test_constrained_generation_follows_the_allowed_mask_and_stops_on_padding(model):
    """A toy grammar: token 3 or 5 twice, then 7 (end), then 0 (padding) only."""
    images, lang, proprio, _ = inputs(B=3, seed=4)
    calls = []

    def allowed(prefix):
        calls.append(prefix.shape[1])
        ok = torch.zeros(prefix.shape[0], CFG.vocab_size, dtype=torch.bool)
        i = prefix.shape[1]
        ok[:, [3, 5] if i < 2 else ([7] if i == 2 else [0])] = True
        return ok

    for use_cache in (True, False):
        calls.clear()
        tokens, ent = model.generate(images, lang, proprio, use_cache=use_cache, allowed=allowed, pad_id=0)
        assert ((tokens[:, :2] == 3) | (tokens[:, :2] == 5)).all()
        assert (tokens[:, 2] == 7).all() and (tokens[:, 3:] == 0).all()
        assert calls == [0, 1, 2, 3]  # stopped as soon as only padding was allowed
        assert (ent[:, 2:] == 0).all() and (ent[:, :2] > 0).all() and (ent[:, :2] <= torch.log(torch.tensor(2.0)) + 1e-6).all()
        # greedy under the mask = the better of the two allowed tokens
        logits = model(images, lang, proprio, tokens)
        best = torch.where(logits[:, :2, 3] >= logits[:, :2, 5], 3, 5)
        assert torch.equal(tokens[:, :2], best)


def test_allowed_returning_none_is_unconstrained(model):
    images, lang, proprio, _ = inputs(B=2, seed=5)
    a, ea = model.generate(images, lang, proprio)
    b, eb = model.generate(images, lang, proprio, allowed=lambda prefix: None, pad_id=0)
    assert torch.equal(a, b) and torch.equal(ea, eb)
