"""ScriptedExpert: output contract, clipping, state validation."""

from __future__ import annotations

import numpy as np
import pytest

from apo.envs import ScriptedExpert
from apo.registry import UnknownNameError


@pytest.fixture(scope="module")
def reset_state(pick_place_env):
    return pick_place_env.reset(seed=1)[1]["state"]


@pytest.mark.slow
def test_expert_returns_float32_action(task, reset_state):
    action = ScriptedExpert(task).act(reset_state)
    assert action.dtype == np.float32
    assert action.shape == (4,)
    assert np.all(np.abs(action) <= 1.0)
    assert np.abs(action).max() > 0  # it moves towards the puck


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Constant")
def test_expert_action_is_clipped(task, reset_state):
    expert = ScriptedExpert(task)
    state = reset_state.copy()
    state[4:7] = [-0.3, 0.9, 0.02]  # puck far away: MetaWorld's raw action exceeds the box
    raw = expert._policy.get_action(state)
    assert np.abs(raw).max() > 1.0, "precondition: the raw expert action is outside [-1, 1]"
    action = expert.act(state)
    assert action.dtype == np.float32 and action.shape == (4,)
    np.testing.assert_allclose(action, np.clip(raw, -1, 1), rtol=1e-6)
    assert np.abs(action).max() == 1.0


@pytest.mark.parametrize("shape", [(38,), (40,), (1, 39), ()])
def test_expert_rejects_wrong_state_shape(task, shape):
    with pytest.raises(ValueError, match="39"):
        ScriptedExpert(task).act(np.zeros(shape))


def test_expert_is_deterministic_and_stateless(task):
    rng = np.random.default_rng(0)
    state = rng.uniform(-0.5, 0.5, 39)
    expert = ScriptedExpert(task)
    a1 = expert.act(state)
    expert.act(rng.uniform(-0.5, 0.5, 39))
    np.testing.assert_array_equal(a1, expert.act(state))
    np.testing.assert_array_equal(a1, ScriptedExpert(task).act(state))


def test_expert_unknown_task():
    with pytest.raises(UnknownNameError, match="pick-place-v3"):
        ScriptedExpert("no-such-task-v3")
