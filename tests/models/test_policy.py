"""VLAPolicy: acting, save/load, instruction cache, load errors, config/tokenizer consistency."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import apo.models.policy as policy_module
from apo.data import DatasetStats
from apo.models import PolicyLoadError, VLAConfig, VLAPolicy
from apo.tokenizers import BinActionTokenizer


@pytest.fixture
def obs_batch(tiny_episodes, instruction):
    ep0, ep1 = tiny_episodes
    images = np.stack([ep0.images[0], ep0.images[10], ep1.images[5]])
    proprio = np.stack([ep0.proprio[0], ep0.proprio[10], ep1.proprio[5]])
    return images, proprio, [instruction] * 3


def test_build_sets_proprio_normalization(tiny_policy, tiny_stats):
    torch.testing.assert_close(tiny_policy.model.proprio_mean, torch.tensor(tiny_stats.proprio_mean))
    torch.testing.assert_close(tiny_policy.model.proprio_std, torch.tensor(tiny_stats.proprio_std))
    cfg = tiny_policy.config
    assert cfg.vocab_size == tiny_policy.tokenizer.vocab_size
    assert cfg.num_action_tokens == tiny_policy.tokenizer.num_tokens


def test_act_batch_contract(tiny_policy, obs_batch):
    actions, info = tiny_policy.act_batch(*obs_batch, return_info=True)
    H = tiny_policy.tokenizer.horizon
    assert actions.shape == (3, H, 4) and actions.dtype == np.float32
    assert info["tokens"].shape == (3, tiny_policy.tokenizer.num_tokens)
    assert info["entropy"].shape == (3, tiny_policy.tokenizer.num_tokens)
    # actions are bin centres inside the tokenizer's range
    tok = tiny_policy.tokenizer
    assert (actions >= tok.lo - 1e-6).all() and (actions <= tok.hi + 1e-6).all()
    np.testing.assert_array_equal(actions, tok.decode(info["tokens"]))
    # cache and no-cache decoding agree
    np.testing.assert_array_equal(actions, tiny_policy.act_batch(*obs_batch, use_cache=False))


def test_act_single_observation(tiny_policy, obs_batch):
    images, proprio, instructions = obs_batch
    chunk = tiny_policy.act({"image": images[1], "proprio": proprio[1], "instruction": instructions[1]})
    assert chunk.shape == (tiny_policy.tokenizer.horizon, 4)
    np.testing.assert_array_equal(chunk, tiny_policy.act_batch(*obs_batch)[1])
    with pytest.raises(KeyError, match="instruction"):
        tiny_policy.act({"image": images[0], "proprio": proprio[0]})


def test_act_batch_validation_and_mode_restore(tiny_policy, obs_batch):
    images, proprio, instructions = obs_batch
    with pytest.raises(ValueError, match="instructions"):
        tiny_policy.act_batch(images, proprio, instructions[:2])
    with pytest.raises(ValueError):
        tiny_policy.act_batch(images[0], proprio, instructions)
    tiny_policy.train()
    tiny_policy.act_batch(images, proprio, instructions)
    assert tiny_policy.model.training  # act_batch must not leave the model in eval mode
    tiny_policy.eval()
    tiny_policy.act_batch(images, proprio, instructions)
    assert not tiny_policy.model.training


def test_log_prob_and_logits(tiny_policy, tiny_batch):
    lp = tiny_policy.log_prob(tiny_batch)
    assert lp.shape == tiny_batch["tokens"].shape
    logits = tiny_policy.logits(tiny_batch)
    expected = torch.log_softmax(logits, -1).gather(-1, tiny_batch["tokens"][..., None])[..., 0]
    torch.testing.assert_close(lp, expected)
    other = (tiny_batch["tokens"] + 1) % tiny_policy.config.vocab_size
    assert not torch.allclose(tiny_policy.log_prob(tiny_batch, other), lp)


def test_save_load_round_trip(tmp_path, tiny_policy, obs_batch):
    # perturb every weight so the test can't pass by re-initializing with the same seed
    with torch.no_grad():
        for p in tiny_policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tiny_policy.save(tmp_path / "policy")
    assert {p.name for p in path.iterdir()} == {"model.safetensors", "config.json", "instructions.safetensors"}
    assert not (tmp_path / "policy.tmp").exists()
    loaded = VLAPolicy.load(path)
    assert not loaded.training and not loaded.model.training
    sd_a, sd_b = tiny_policy.model.state_dict(), loaded.model.state_dict()
    assert sd_a.keys() == sd_b.keys()
    for k in sd_a:
        assert torch.equal(sd_a[k], sd_b[k]), k
    assert loaded.config == tiny_policy.config
    assert loaded.tokenizer.to_dict() == tiny_policy.tokenizer.to_dict()
    assert loaded.stats == tiny_policy.stats
    a, ia = tiny_policy.act_batch(*obs_batch, return_info=True)
    b, ib = loaded.act_batch(*obs_batch, return_info=True)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ia["tokens"], ib["tokens"])
    # nothing recorded about its images: deployment checks at least the image size
    assert loaded.rendering is None and loaded.rendering_to_match() == {"image_size": tiny_policy.config.image_size}


def test_save_load_keeps_the_rendering(tmp_path, tiny_policy):
    rec = {"image_size": tiny_policy.config.image_size, "camera": {"azimuth": 90.0}, "goal_pin": True}
    tiny_policy.rendering = rec
    try:
        assert VLAPolicy.load(tiny_policy.save(tmp_path / "policy")).rendering_to_match() == rec
    finally:
        tiny_policy.rendering = None


def test_save_overwrites_atomically(tmp_path, make_policy):
    first, second = make_policy(seed=1), make_policy(seed=2)
    path = tmp_path / "policy"
    first.save(path)
    second.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]  # no .tmp / .old left
    loaded = VLAPolicy.load(path)
    torch.testing.assert_close(loaded.model.head.weight, second.model.head.weight, atol=0, rtol=0)


def test_load_keeps_instruction_embeddings(tmp_path, tiny_policy, obs_batch, instruction, monkeypatch):
    tiny_policy.save(tmp_path / "p")

    def no_encoder(texts):
        raise AssertionError(f"the sentence encoder was called for {texts}")

    monkeypatch.setattr(policy_module, "encode_instructions", no_encoder)
    loaded = VLAPolicy.load(tmp_path / "p")
    torch.testing.assert_close(loaded.embed_instructions([instruction]), tiny_policy.embed_instructions([instruction]))
    np.testing.assert_array_equal(loaded.act_batch(*obs_batch), tiny_policy.act_batch(*obs_batch))
    with pytest.raises(AssertionError, match="encoder was called"):  # the patch is effective
        loaded.embed_instructions(["a new instruction"])


def test_policy_without_instructions_saves_and_loads(tmp_path, tiny_stats):
    tok = BinActionTokenizer(tiny_stats.action_q01, tiny_stats.action_q99, n_bins=16, horizon=1)
    p = VLAPolicy.build(tok, tiny_stats, d_model=32, n_layers=1, n_heads=2)
    p.save(tmp_path / "p")
    assert not (tmp_path / "p" / "instructions.safetensors").exists()
    assert VLAPolicy.load(tmp_path / "p")._instructions == {}


def test_load_missing_folder_or_config(tmp_path):
    with pytest.raises(PolicyLoadError, match="no config.json"):
        VLAPolicy.load(tmp_path / "does-not-exist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PolicyLoadError, match="no config.json"):
        VLAPolicy.load(tmp_path / "empty")


def test_load_corrupt_config(tmp_path, tiny_policy):
    path = tiny_policy.save(tmp_path / "p")
    (path / "config.json").write_text('{"format": "apo-policy-v1", "model": {')
    with pytest.raises(PolicyLoadError, match="corrupt"):
        VLAPolicy.load(path)


def test_load_wrong_format(tmp_path, tiny_policy):
    path = tiny_policy.save(tmp_path / "p")
    meta = json.loads((path / "config.json").read_text())
    meta["format"] = "something-else"
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(PolicyLoadError, match="format"):
        VLAPolicy.load(path)


def test_load_corrupt_weights(tmp_path, tiny_policy):
    path = tiny_policy.save(tmp_path / "p")
    (path / "model.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(PolicyLoadError, match="model.safetensors"):
        VLAPolicy.load(path)


def test_load_weights_of_a_different_shape(tmp_path, make_policy):
    path = make_policy().save(tmp_path / "p")
    meta = json.loads((path / "config.json").read_text())
    meta["model"]["d_model"] = 64  # config no longer matches the weights
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(PolicyLoadError, match="cannot load weights"):
        VLAPolicy.load(path)


def test_mismatched_tokenizer_and_config(tiny_stats):
    tok = BinActionTokenizer(tiny_stats.action_q01, tiny_stats.action_q99, n_bins=64, horizon=2)
    with pytest.raises(ValueError, match="does not match the tokenizer"):
        VLAPolicy(VLAConfig(d_model=32, n_layers=1, n_heads=2, vocab_size=32, num_action_tokens=8), tok, tiny_stats)
    with pytest.raises(ValueError, match="does not match the tokenizer"):
        VLAPolicy(VLAConfig(d_model=32, n_layers=1, n_heads=2, vocab_size=64, num_action_tokens=4), tok, tiny_stats)


def test_mismatched_stats_and_config(tiny_stats):
    tok = BinActionTokenizer(tiny_stats.action_q01, tiny_stats.action_q99, n_bins=64, horizon=1)
    stats3 = DatasetStats(tiny_stats.action_q01, tiny_stats.action_q99, [0.0] * 3, [1.0] * 3, 10)
    with pytest.raises(ValueError, match="proprio"):
        VLAPolicy(VLAConfig(d_model=32, n_layers=1, n_heads=2, vocab_size=64, num_action_tokens=4), tok, stats3)


# ----- a policy with the FAST tokenizer -----

@pytest.fixture
def fast_policy(tiny_episodes, tiny_stats, instruction):
    from apo.tokenizers import FASTActionTokenizer, FASTConfig
    from apo.training.base_policy import dataset_chunks

    tok = FASTActionTokenizer.fit(dataset_chunks(tiny_episodes, 3), tiny_stats.action_q01, tiny_stats.action_q99,
                                  FASTConfig(vocab_size=200))
    torch.manual_seed(0)
    policy = VLAPolicy.build(tok, tiny_stats, image_size=64, d_model=32, n_layers=1, n_heads=2)
    policy.embed_instructions([instruction])
    return policy


def test_fast_policy_acts_with_well_formed_chunks(fast_policy, obs_batch):
    tok = fast_policy.tokenizer
    assert fast_policy.config.num_action_tokens == tok.num_tokens == 3 * 4 + 2
    actions, info = fast_policy.act_batch(*obs_batch, return_info=True)
    assert actions.shape == (3, 3, 4) and np.isfinite(actions).all()  # an untrained model, yet every chunk decodes
    assert tok.decodable(info["tokens"]).all()
    np.testing.assert_array_equal(actions, tok.decode(info["tokens"]))
    np.testing.assert_array_equal(info["token_mask"], tok.token_mask(info["tokens"]))
    # padded positions carry the mean entropy of the real tokens: a row mean is the mean over real tokens
    m = info["token_mask"]
    real_mean = (info["entropy"] * m).sum(1) / m.sum(1)
    np.testing.assert_allclose(info["entropy"].mean(1), real_mean, rtol=1e-5)
    np.testing.assert_array_equal(actions, fast_policy.act_batch(*obs_batch, use_cache=False))


def test_fast_policy_save_load_round_trip(tmp_path, fast_policy, obs_batch):
    fast_policy.save(tmp_path / "p")
    loaded = VLAPolicy.load(tmp_path / "p")
    assert loaded.tokenizer.kind == "fast" and loaded.tokenizer.to_dict() == fast_policy.tokenizer.to_dict()
    np.testing.assert_array_equal(loaded.act_batch(*obs_batch), fast_policy.act_batch(*obs_batch))
