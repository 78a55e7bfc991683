"""Episode validation."""

from __future__ import annotations

import numpy as np
import pytest

from apo.data import LABEL_HUMAN, LABEL_POLICY, LABEL_UNDESIRABLE


def test_valid_episode(make_episode):
    ep = make_episode(T=7, labels=np.array([0, 1, 2, 2, 1, 0, 2], np.int8), source="interaction")
    assert len(ep) == 7
    assert (LABEL_UNDESIRABLE, LABEL_POLICY, LABEL_HUMAN) == (0, 1, 2)


@pytest.mark.parametrize("field", ["images", "proprio", "rewards", "dones", "labels"])
def test_mismatched_lengths(make_episode, field):
    longer = getattr(make_episode(T=6), field)  # one step more than the 5 actions
    with pytest.raises(ValueError, match=f"{field} has \\(6,\\) steps but actions have 5"):
        make_episode(T=5, **{field: longer})


def test_mismatched_policy_actions(make_episode):
    with pytest.raises(ValueError, match="policy_actions"):
        make_episode(T=5, policy_actions=np.zeros((4, 4), np.float32))


@pytest.mark.parametrize("labels", [[0, 1, 2, 3, 2], [-1, 1, 1, 1, 1]])
def test_bad_labels(make_episode, labels):
    with pytest.raises(ValueError, match="labels must be in"):
        make_episode(T=5, labels=np.array(labels, np.int8))


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((5, 16, 16, 3), np.float32),  # bad dtype
        np.zeros((5, 16, 16), np.uint8),  # no channel axis
        np.zeros((5, 16, 16, 4), np.uint8),  # RGBA
    ],
    ids=["float", "no-channels", "rgba"],
)
def test_bad_images(make_episode, images):
    with pytest.raises(ValueError, match="uint8 \\(T, H, W, 3\\)"):
        make_episode(T=5, images=images)


def test_bad_action_and_proprio_rank(make_episode):
    with pytest.raises(ValueError, match="actions must be"):
        make_episode(T=5, actions=np.zeros((5, 2, 2), np.float32))
    with pytest.raises(ValueError, match="proprio must be"):
        make_episode(T=5, proprio=np.zeros(5, np.float32))


def test_nan_actions(make_episode):
    actions = np.zeros((5, 4), np.float32)
    actions[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        make_episode(T=5, actions=actions)


def test_bad_source(make_episode):
    with pytest.raises(ValueError, match="source"):
        make_episode(source="human")


def test_empty_episode(make_episode):
    with pytest.raises(ValueError, match="no steps"):
        make_episode(T=0)


def test_error_names_the_episode_and_all_problems(make_episode):
    with pytest.raises(ValueError) as exc:
        make_episode(T=5, seed=42, labels=np.full(5, 9, np.int8), source="bad")
    msg = str(exc.value)
    assert "seed 42" in msg and "synthetic-task" in msg
    assert "labels" in msg and "source" in msg
