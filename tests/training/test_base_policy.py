"""The base-policy recipe: tokenizer from dataset stats, BC training, saved policy."""

from __future__ import annotations

import numpy as np
import pytest

from apo.models import VLAConfig, VLAPolicy
from apo.training import TrainConfig
from apo.training.base_policy import BaseRecipe, build_policy, train_base_policy

TINY = VLAConfig(d_model=32, n_layers=1, n_heads=2)


def test_build_policy_uses_stats_and_recipe(tiny_dataset, tiny_stats):
    policy = build_policy(tiny_dataset, BaseRecipe(horizon=3, n_bins=32, model=TINY), image_size=64)
    tok = policy.tokenizer
    assert (tok.horizon, tok.n_bins, tok.kind) == (3, 32, "bin")
    np.testing.assert_allclose(tok.q01, tiny_stats.action_q01)
    np.testing.assert_allclose(tok.q99, tiny_stats.action_q99)
    assert policy.config.num_action_tokens == 12 and policy.config.vocab_size == 32
    assert policy.config.image_size == 64 and policy.config.d_model == 32


def test_recipe_validation():
    with pytest.raises(ValueError):
        BaseRecipe(horizon=0)


@pytest.mark.slow
def test_train_base_policy_saves_a_loadable_policy(tmp_path, tiny_dataset, tiny_episodes):
    recipe = BaseRecipe(horizon=2, n_bins=32, model=TINY,
                        train=TrainConfig(steps=3, batch_size=4, log_every=1, threads=1))
    policy = train_base_policy(tiny_dataset, tmp_path, recipe)
    loaded = VLAPolicy.load(tmp_path / "policy")
    ep = tiny_episodes[0]
    args = (ep.images[:2], ep.proprio[:2], [ep.instruction] * 2)
    np.testing.assert_array_equal(policy.act_batch(*args), loaded.act_batch(*args))
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "metrics.jsonl").exists()
