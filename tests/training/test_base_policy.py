"""The base-policy recipe: tokenizer from dataset stats, BC training, saved policy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from apo.data import DatasetError
from apo.models import VLAConfig, VLAPolicy
from apo.registry import UnknownNameError
from apo.tokenizers import FASTActionTokenizer, FASTConfig, save_tokenizer
from apo.training import TrainConfig
from apo.training.base_policy import BaseRecipe, build_policy, dataset_chunks, fit_tokenizer, train_base_policy

TINY = VLAConfig(d_model=32, n_layers=1, n_heads=2)


def test_build_policy_uses_stats_and_recipe(tiny_dataset, tiny_stats):
    policy = build_policy(tiny_dataset, BaseRecipe(horizon=3, n_bins=32, tokenizer="bin", model=TINY), image_size=64)
    tok = policy.tokenizer
    assert (tok.horizon, tok.n_bins, tok.kind) == (3, 32, "bin")
    np.testing.assert_allclose(tok.q01, tiny_stats.action_q01)
    np.testing.assert_allclose(tok.q99, tiny_stats.action_q99)
    assert policy.config.num_action_tokens == 12 and policy.config.vocab_size == 32
    assert policy.config.image_size == 64 and policy.config.d_model == 32


def test_build_policy_names_an_image_grid_the_data_cannot_fill(tiny_dataset):
    # 64 px images give a 4x4 conv feature map: a 6x6 grid is a one-line CLI error naming the fix
    recipe = BaseRecipe(horizon=3, n_bins=32, tokenizer="bin", model=VLAConfig(d_model=32, n_layers=1, n_heads=2, image_grid=6))
    with pytest.raises(DatasetError, match="image-grid 4 or less"):
        build_policy(tiny_dataset, recipe, image_size=64)


def test_recipe_validation():
    with pytest.raises(ValueError):
        BaseRecipe(horizon=0)


@pytest.mark.slow
def test_train_base_policy_saves_a_loadable_policy(tmp_path, tiny_dataset, tiny_episodes):
    recipe = BaseRecipe(horizon=2, n_bins=32, tokenizer="bin", model=TINY,
                        train=TrainConfig(steps=3, batch_size=4, log_every=1, threads=1))
    policy = train_base_policy(tiny_dataset, tmp_path, recipe)
    loaded = VLAPolicy.load(tmp_path / "policy")
    ep = tiny_episodes[0]
    args = (ep.images[:2], ep.proprio[:2], [ep.instruction] * 2)
    np.testing.assert_array_equal(policy.act_batch(*args), loaded.act_batch(*args))
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "metrics.jsonl").exists()
    # the demos' rendering travels with the policy, so deploying it with other images is caught
    assert loaded.rendering == policy.rendering == json.loads(ep.extras["rendering"])


@pytest.mark.slow
def test_train_base_policy_is_reproducible_from_its_seed(tmp_path, tiny_dataset):
    # the initial weights must come from TrainConfig.seed, not from torch's start-up generator or from
    # whatever ran before in the process: one recipe built twice gives one policy, another seed another
    def build(name, seed):
        recipe = BaseRecipe(horizon=2, n_bins=32, tokenizer="bin", model=TINY,
                            train=TrainConfig(steps=2, batch_size=4, log_every=1, threads=1, seed=seed))
        return train_base_policy(tiny_dataset, tmp_path / name, recipe).state_dict()

    first, again, other = build("a", 0), build("b", 0), build("c", 1)
    assert first.keys() == again.keys()
    for key in first:
        torch.testing.assert_close(first[key], again[key], rtol=0, atol=0, msg=key)
    assert any(not torch.equal(first[key], other[key]) for key in first)


# ----- the FAST tokenizer in the recipe -----

def test_recipe_rejects_unknown_tokenizer():
    with pytest.raises(UnknownNameError, match="fast"):
        BaseRecipe(tokenizer="vq")


def test_build_policy_with_fast_fits_on_the_dataset(tiny_dataset, tiny_episodes, tiny_stats):
    recipe = BaseRecipe(horizon=3, tokenizer="fast", fast=FASTConfig(vocab_size=150), model=TINY)
    policy = build_policy(tiny_dataset, recipe, image_size=64)
    tok = policy.tokenizer
    assert tok.kind == "fast" and tok.horizon == 3 and tok.scale == 10.0
    assert policy.config.num_action_tokens == tok.num_tokens == 3 * 4 + 2
    assert policy.config.vocab_size == tok.vocab_size <= 150
    np.testing.assert_allclose(tok.q01, tiny_stats.action_q01)
    # fitted on exactly the training data's chunks: the same as fitting by hand
    by_hand = FASTActionTokenizer.fit(dataset_chunks(tiny_episodes, 3), tiny_stats.action_q01, tiny_stats.action_q99,
                                      FASTConfig(vocab_size=150))
    assert tok.to_dict() == by_hand.to_dict()


def test_fit_tokenizer_and_tokenizer_file(tmp_path, tiny_dataset):
    recipe = BaseRecipe(horizon=2, tokenizer="fast", fast=FASTConfig(vocab_size=120), model=TINY)
    tok, counts = fit_tokenizer(tiny_dataset, recipe)
    assert counts.chunks == 40 and counts.bin == 8 and counts.padded == tok.num_tokens == 10
    assert 2 <= counts.mean <= counts.max <= 10 and counts.max_error <= tok.max_error().max() + 1e-6
    path = save_tokenizer(tok, tmp_path / "fast.json")
    policy = build_policy(tiny_dataset, BaseRecipe(horizon=2, tokenizer="fast", tokenizer_file=path, model=TINY), 64)
    assert policy.tokenizer.to_dict() == tok.to_dict()
    with pytest.raises(ValueError, match="--recipe.tokenizer fast"):
        build_policy(tiny_dataset, BaseRecipe(horizon=2, tokenizer="bin", tokenizer_file=path, model=TINY), 64)
    with pytest.raises(ValueError, match="--recipe.horizon 2"):
        build_policy(tiny_dataset, BaseRecipe(horizon=4, tokenizer="fast", tokenizer_file=path, model=TINY), 64)


@pytest.mark.slow
def test_train_base_policy_with_fast_saves_a_loadable_policy(tmp_path, tiny_dataset, tiny_episodes):
    recipe = BaseRecipe(horizon=2, tokenizer="fast", fast=FASTConfig(vocab_size=120), model=TINY,
                        train=TrainConfig(steps=3, batch_size=4, log_every=1, threads=1))
    policy = train_base_policy(tiny_dataset, tmp_path, recipe)
    loaded = VLAPolicy.load(tmp_path / "policy")
    assert loaded.tokenizer.kind == "fast"
    ep = tiny_episodes[0]
    args = (ep.images[:2], ep.proprio[:2], [ep.instruction] * 2)
    actions = loaded.act_batch(*args)
    assert np.isfinite(actions).all()
    np.testing.assert_array_equal(policy.act_batch(*args), actions)
