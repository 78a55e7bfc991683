"""Rendering: the reset frame shows the new episode's goal; the goal pin is drawn under visible goals only."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from apo.envs import EnvConfig, ScriptedExpert, make_env

pytestmark = pytest.mark.slow  # every test here renders MuJoCo

HIGH_GOAL, LOW_GOAL = 10_000_000, 10_000_003  # pick-place seeds with the goal 30 cm and 6 cm above the table


def _goal_site(env) -> int:
    return mujoco.mj_name2id(env.raw_env.model, mujoco.mjtObj.mjOBJ_SITE, "goal")


def test_the_reset_frame_shows_this_episodes_goal_marker():
    env = make_env("pick-place-v3")
    try:
        env.reset(seed=LOW_GOAL)
        obs, info = env.reset(seed=HIGH_GOAL)  # MetaWorld moves the goal site after its last forward pass
        np.testing.assert_allclose(env.raw_env.data.site_xpos[_goal_site(env)], info["state"][36:39], atol=1e-6)
        mujoco.mj_forward(env.raw_env.model, env.raw_env.data)  # everything recomputed from the state
        np.testing.assert_array_equal(obs["image"], env.render())
    finally:
        env.close()


def _pin_pixels(task: str, seed: int) -> int:
    """Pixels that change when the goal pin is drawn, on the reset frame of ``seed``."""
    frames = []
    for pin in (False, True):
        env = make_env(task, EnvConfig(goal_pin=pin))
        try:
            frames.append(env.reset(seed=seed)[0]["image"].astype(int))
        finally:
            env.close()
    return int((np.abs(frames[0] - frames[1]).sum(-1) > 0).sum())


def test_the_goal_pin_is_longer_under_a_higher_goal():
    high, low = _pin_pixels("pick-place-v3", HIGH_GOAL), _pin_pixels("pick-place-v3", LOW_GOAL)
    assert low > 0  # drawn at all
    assert high > 2 * low  # 30 cm of pin against 6 cm


def test_no_pin_without_a_goal_marker():
    assert _pin_pixels("coffee-push-v3", HIGH_GOAL) == 0  # coffee-push has no goal site


def test_the_pin_is_only_drawn_not_simulated():
    states = {}
    for pin in (False, True):
        env = make_env("pick-place-v3", EnvConfig(goal_pin=pin))
        expert = ScriptedExpert("pick-place-v3")
        try:
            _, info = env.reset(seed=HIGH_GOAL)
            for _ in range(20):
                _, _, _, _, info = env.step(expert.act(info["state"]))
            states[pin] = info["state"]
        finally:
            env.close()
    np.testing.assert_array_equal(states[False], states[True])


def test_the_reset_fix_leaves_the_dynamics_alone():
    """The wrapped env (with its kinematics pass at reset) steps exactly like the raw MetaWorld env."""
    env, other = make_env("pick-place-v3"), make_env("pick-place-v3")
    expert = ScriptedExpert("pick-place-v3")
    try:
        _, info = env.reset(seed=HIGH_GOAL)
        raw = other.raw_env
        raw.seed(HIGH_GOAL)
        raw_state, _ = raw.reset()
        np.testing.assert_array_equal(info["state"], raw_state)
        for _ in range(30):
            action = expert.act(info["state"])
            _, _, _, _, info = env.step(action)
            raw_state, *_ = raw.step(np.clip(action, -1.0, 1.0).astype(np.float32))
            np.testing.assert_array_equal(info["state"], raw_state)
    finally:
        env.close()
        other.close()


def test_renders_offscreen_when_mujoco_gl_is_unset():
    """A fresh shell has no MUJOCO_GL: importing apo.envs must choose EGL before mujoco is first imported
    (mujoco otherwise picks GLFW, which needs a display, and `apo collect-demos` fails on its first env)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY")}
    code = ("from apo.envs import make_env; e = make_env('reach-v3'); o, _ = e.reset(seed=0); "
            "print(o['image'].shape, o['image'].std() > 0); e.close()")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "(64, 64, 3) True"
