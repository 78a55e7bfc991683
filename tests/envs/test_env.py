"""MetaWorldEnv: observation contract, seeding, flags, step cap, input validation, task lookup."""

from __future__ import annotations

import numpy as np
import pytest

from apo.envs import ACTION_DIM, PROPRIO_DIM, EnvConfig, ScriptedExpert, get_task, make_env
from apo.registry import UnknownNameError

pytestmark = pytest.mark.slow  # every test here renders MuJoCo


def _check_obs(obs, size, instruction):
    assert set(obs) == {"image", "proprio", "instruction"}
    assert obs["image"].dtype == np.uint8
    assert obs["image"].shape == (size, size, 3)
    assert obs["proprio"].dtype == np.float32
    assert obs["proprio"].shape == (PROPRIO_DIM,)
    assert isinstance(obs["instruction"], str)
    assert obs["instruction"] == instruction


def test_reset_observation_contract(pick_place_env, task):
    env = pick_place_env
    obs, info = env.reset(seed=3)
    _check_obs(obs, 64, get_task(task).instruction)
    assert info["state"].shape == (39,)
    assert info["success"] is False
    assert info["seed"] == 3
    # proprio is the end-effector position and gripper opening, i.e. the first 4 state entries
    np.testing.assert_allclose(obs["proprio"], info["state"][:PROPRIO_DIM].astype(np.float32))
    # the image is a real rendering, not a blank frame
    assert obs["image"].std() > 5


def test_observations_are_in_the_declared_spaces(pick_place_env):
    env = pick_place_env
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    obs, *_ = env.step(np.zeros(ACTION_DIM, np.float32))
    assert env.observation_space.contains(obs)
    assert env.action_space.shape == (ACTION_DIM,)


def test_step_contract(pick_place_env, task):
    env = pick_place_env
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(np.array([0.5, -0.5, 0.2, 1.0], np.float32))
    _check_obs(obs, 64, get_task(task).instruction)
    assert isinstance(reward, float)
    assert terminated is False and truncated is False
    assert info["step"] == 1
    assert info["state"].shape == (39,)
    np.testing.assert_array_equal(env.state, info["state"])


def test_reset_is_reproducible_for_a_seed(pick_place_env):
    env = pick_place_env
    obs_a, info_a = env.reset(seed=5)
    for _ in range(3):  # disturb the scene in between: the reset must not depend on history
        env.step(np.ones(ACTION_DIM, np.float32))
    env.reset(seed=6)
    obs_b, info_b = env.reset(seed=5)
    np.testing.assert_array_equal(obs_a["image"], obs_b["image"])
    np.testing.assert_array_equal(info_a["state"], info_b["state"])
    np.testing.assert_array_equal(obs_a["proprio"], obs_b["proprio"])


def test_reset_differs_between_seeds(pick_place_env):
    env = pick_place_env
    obs_a, info_a = env.reset(seed=5)
    obs_b, info_b = env.reset(seed=6)
    assert not np.array_equal(info_a["state"], info_b["state"])
    assert not np.array_equal(obs_a["image"], obs_b["image"])


def test_reset_without_seed_reports_the_seed_it_used(pick_place_env):
    env = pick_place_env
    _, info = env.reset()
    seed = info["seed"]
    assert isinstance(seed, int)
    _, info2 = env.reset(seed=seed)
    np.testing.assert_array_equal(info["state"], info2["state"])


def test_out_of_box_actions_are_clipped(pick_place_env):
    env = pick_place_env
    env.reset(seed=2)
    big = env.step(np.array([5.0, -7.0, 3.0, 9.0], np.float32))[4]["state"]
    env.reset(seed=2)
    clipped = env.step(np.array([1.0, -1.0, 1.0, 1.0], np.float32))[4]["state"]
    np.testing.assert_array_equal(big, clipped)


@pytest.mark.parametrize(
    "action",
    [np.zeros(3), np.zeros(5), np.zeros((1, 4)), np.array([0.0, np.nan, 0.0, 0.0]), np.array([np.inf, 0, 0, 0])],
    ids=["3", "5", "1x4", "nan", "inf"],
)
def test_bad_actions_raise_value_error(pick_place_env, action):
    env = pick_place_env
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)


def test_step_cap_truncates_exactly_at_max_steps(task):
    env = make_env(task, EnvConfig(max_steps=5))
    try:
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros(ACTION_DIM, np.float32))
        env.reset(seed=0)
        for t in range(1, 5):
            _, _, terminated, truncated, info = env.step(np.zeros(ACTION_DIM, np.float32))
            assert (terminated, truncated, info["step"]) == (False, False, t)
        _, _, terminated, truncated, info = env.step(np.zeros(ACTION_DIM, np.float32))
        assert (terminated, truncated, info["step"]) == (False, True, 5)
        # a reset restarts the step counter
        env.reset(seed=0)
        assert env.step(np.zeros(ACTION_DIM, np.float32))[4]["step"] == 1
    finally:
        env.close()


def test_default_step_cap_is_the_tasks(pick_place_env, task):
    assert pick_place_env.max_steps == get_task(task).max_steps


def test_success_terminates_only_when_configured(pick_place_env, task):
    expert = ScriptedExpert(task)
    env = pick_place_env  # terminate_on_success=True (default)
    obs, info = env.reset(seed=1)
    terminated = truncated = False
    steps = 0
    while not (terminated or truncated):
        obs, _, terminated, truncated, info = env.step(expert.act(info["state"]))
        steps += 1
    assert terminated and not truncated, "the scripted expert should solve pick-place from seed 1"
    assert info["success"] is True
    assert steps < env.max_steps

    # the same rollout without termination: success is reported, the episode goes on to the cap
    env2 = make_env(task, EnvConfig(max_steps=steps + 2, terminate_on_success=False))
    try:
        _, info = env2.reset(seed=1)
        flags = []
        for _ in range(steps + 2):
            _, _, term, trunc, info = env2.step(expert.act(info["state"]))
            flags.append((info["success"], term, trunc))
        assert flags[steps - 1] == (True, False, False)
        assert all(not term for _, term, _ in flags)
        assert flags[-1][2] is True
        assert not any(trunc for _, _, trunc in flags[:-1])
    finally:
        env2.close()


def test_unknown_task_lists_valid_names():
    with pytest.raises(UnknownNameError) as exc:
        make_env("pick-plcae-v3")
    msg = str(exc.value)
    assert "pick-plcae-v3" in msg
    assert "pick-place-v3" in msg
    assert "button-press-v3" in msg  # fallback MetaWorld names are listed too
    assert isinstance(exc.value, KeyError)


def test_any_metaworld_v3_task_works():
    env = make_env("button-press-v3", EnvConfig(image_size=32, max_steps=3))
    try:
        obs, info = env.reset(seed=0)
        _check_obs(obs, 32, "button press")
        assert env.instruction == "button press"
        for _ in range(3):
            *_, truncated, _ = env.step(np.zeros(ACTION_DIM, np.float32))
        assert truncated is True
    finally:
        env.close()


@pytest.mark.parametrize("kwargs", [dict(image_size=8), dict(image_size=1024), dict(max_steps=0), dict(max_steps=501)])
def test_env_config_validation(kwargs):
    with pytest.raises(ValueError):
        EnvConfig(**kwargs)


# ----- the rendering recorded with episodes and policies (pure data, nothing rendered) -----

def test_rendering_record_is_json_and_checks_what_it_holds():
    import json

    from apo.envs import CameraConfig
    from apo.envs.metaworld_env import check_rendering

    rec = EnvConfig(goal_pin=True).rendering()
    assert json.loads(json.dumps(rec)) == rec
    check_rendering(rec, EnvConfig(goal_pin=True, max_steps=20))  # the step cap does not change images
    check_rendering(None, EnvConfig(image_size=96))  # nothing recorded: nothing to check
    check_rendering({"image_size": 96}, EnvConfig(image_size=96, goal_pin=True))  # an old policy: size only
    with pytest.raises(ValueError, match=r"camera .*'distance': 0.95.* there, .*'distance': 2.0.*--env.camera.distance 0.95"):
        check_rendering(EnvConfig().rendering(), EnvConfig(camera=CameraConfig(distance=2.0)))


def test_recorded_rendering_of_episodes():
    import json

    from apo.envs.metaworld_env import recorded_rendering

    pin, plain = (json.dumps(EnvConfig(goal_pin=g).rendering()) for g in (True, False))
    assert recorded_rendering([{"rendering": pin}, {"rendering": pin}, {}], "demos") == json.loads(pin)
    assert recorded_rendering([{}, {"takeovers": "1"}], "demos") is None
    with pytest.raises(ValueError, match="demos mixes episodes rendered differently"):
        recorded_rendering([{"rendering": pin}, {"rendering": plain}], "demos")
