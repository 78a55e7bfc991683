"""Expert demonstrations: DemoConfig validation and rollout_expert (exercised by the dataset fixture)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apo.data.demos import DemoConfig, rollout_expert
from apo.envs import ScriptedExpert


@pytest.mark.parametrize("kwargs", [dict(episodes_per_task=0), dict(action_noise=-0.1), dict(tasks=())])
def test_demo_config_validation(kwargs):
    with pytest.raises(ValueError):
        DemoConfig(**kwargs)


@pytest.mark.slow
def test_rollout_expert_records_clean_actions_and_is_seeded(pick_place_env, task, tiny_episodes):
    env, expert = pick_place_env, ScriptedExpert(task)
    # record 20 steps like the fixture did (seed 1); the long-cap env must give the same first 20 steps
    ep = rollout_expert(env, expert, seed=1)
    ref = tiny_episodes[0]
    np.testing.assert_array_equal(ep.images[:20], ref.images)
    np.testing.assert_allclose(ep.actions[:20], ref.actions)
    assert ep.success and ep.dones[-1] and len(ep) < env.max_steps
    assert json.loads(ep.extras["rendering"]) == env.config.rendering()  # and the stored ones kept it:
    assert json.loads(ref.extras["rendering"])["image_size"] == ref.images.shape[1]
    # recorded action at t is the expert's action for the observation at t
    _, info = env.reset(seed=1)
    np.testing.assert_array_equal(ep.actions[0], expert.act(info["state"]))
