"""relabel_pre_takeover / takeover_steps: the K policy steps before each takeover become 0."""

from __future__ import annotations

import numpy as np
import pytest

from apo.data.episode import LABEL_HUMAN as H, LABEL_POLICY as P, LABEL_UNDESIRABLE as U
from apo.deployment.labels import (
    policy_steps_before_window, relabel_pre_takeover, relabel_with_k, takeover_steps, unrescued_person_steps,
    unrescued_undesirable_steps,
)


def L(*xs) -> np.ndarray:
    return np.array(xs, np.int8)


# ----- takeover_steps -----

def test_takeover_steps_indices():
    labels = L(P, P, H, H, P, P, P, H, P)
    np.testing.assert_array_equal(takeover_steps(labels), [2, 7])


def test_takeover_steps_counts_already_relabeled_policy_steps():
    # a 0 is a (relabeled) policy step: 0 -> 2 is still a takeover
    np.testing.assert_array_equal(takeover_steps(L(P, U, U, H, H)), [3])


def test_takeover_steps_human_from_start_is_not_a_takeover():
    assert takeover_steps(L(H, H, P, P)).size == 0
    assert takeover_steps(L(H, H, H)).size == 0
    assert takeover_steps(L(P, P, P)).size == 0
    assert takeover_steps(L(H)).size == 0
    assert takeover_steps(np.array([], np.int8)).size == 0


# ----- relabel_pre_takeover -----

def test_basic_window_of_k():
    labels = L(P, P, P, P, P, P, H, H, P, P)
    out = relabel_pre_takeover(labels, k=3)
    np.testing.assert_array_equal(out, L(P, P, P, U, U, U, H, H, P, P))
    assert out.dtype == np.int8


def test_returns_a_copy_and_leaves_input_untouched():
    labels = L(P, P, P, H)
    before = labels.copy()
    out = relabel_pre_takeover(labels, k=2)
    np.testing.assert_array_equal(labels, before)
    assert out is not labels
    np.testing.assert_array_equal(out, L(P, U, U, H))


def test_takeover_before_k_relabels_only_existing_steps():
    out = relabel_pre_takeover(L(P, P, H, H, P), k=10)
    np.testing.assert_array_equal(out, L(U, U, H, H, P))


def test_takeover_at_step_one():
    np.testing.assert_array_equal(relabel_pre_takeover(L(P, H, P, P), k=5), L(U, H, P, P))


def test_overlapping_windows_of_close_takeovers_are_unioned():
    # takeovers at 6 and 9 (K=4): windows [2..5] and [7..8] (the second stops at the human step 6)
    labels = L(P, P, P, P, P, P, H, P, P, H, P, P)
    out = relabel_pre_takeover(labels, k=4)
    np.testing.assert_array_equal(out, L(P, P, U, U, U, U, H, U, U, H, P, P))


def test_overlapping_windows_pure_policy_gap():
    # two takeovers whose K-windows overlap only through policy steps: union, nothing double-counted
    labels = L(P, P, P, P, H, P, P, H)
    out = relabel_pre_takeover(labels, k=3)
    np.testing.assert_array_equal(out, L(P, U, U, U, H, U, U, H))


def test_window_stops_at_earlier_human_segment():
    labels = L(H, H, H, P, P, H)
    out = relabel_pre_takeover(labels, k=10)
    # only the two contiguous policy steps before the takeover; human steps never become 0
    np.testing.assert_array_equal(out, L(H, H, H, U, U, H))
    assert (out[labels == H] == H).all()


def test_human_steps_are_never_relabeled_random():
    rng = np.random.default_rng(0)
    for _ in range(50):
        labels = rng.choice([P, H], size=30, p=[0.7, 0.3]).astype(np.int8)
        k = int(rng.integers(0, 8))
        out = relabel_pre_takeover(labels, k=k)
        assert (out[labels == H] == H).all()
        assert set(np.unique(out)) <= {U, P, H}
        # a brute-force restatement of the rule: a policy step s becomes 0 iff some takeover t
        # has t - k <= s < t and every step in [s, t) was a policy step
        expect = labels.copy()
        for t in takeover_steps(labels):
            for s in range(t - 1, max(-1, t - k - 1), -1):
                if labels[s] == H:
                    break
                expect[s] = U
        np.testing.assert_array_equal(out, expect)


def test_human_from_step_zero_relabels_nothing():
    labels = L(H, H, H, P, P, P)
    np.testing.assert_array_equal(relabel_pre_takeover(labels, k=10), labels)


def test_k_zero_is_a_noop():
    labels = L(P, P, H, H, P, H)
    np.testing.assert_array_equal(relabel_pre_takeover(labels, k=0), labels)


def test_no_takeover_is_a_noop():
    labels = L(P, P, P, P)
    np.testing.assert_array_equal(relabel_pre_takeover(labels, k=3), labels)


def test_labels_already_containing_zeros():
    # already relabeled with K=2; relabeling again with K=3 extends the window and stays idempotent
    labels = L(P, P, P, U, U, H, P)
    np.testing.assert_array_equal(relabel_pre_takeover(labels, k=3), L(P, P, U, U, U, H, P))
    once = relabel_pre_takeover(L(P, P, P, P, H), k=2)
    np.testing.assert_array_equal(relabel_pre_takeover(once, k=2), once)


@pytest.mark.parametrize("k", [0, 1, 2, 5])
def test_relabel_with_k_is_as_if_collected_with_k(k):
    # recorded with K=3; relabeling with another K gives what collecting with that K would have
    raw = L(P, P, P, P, P, H, H, P, P, H, P, P)
    recorded = relabel_pre_takeover(raw, k=3)
    np.testing.assert_array_equal(relabel_with_k(recorded, k), relabel_pre_takeover(raw, k))


def test_relabel_with_k_shrinks_the_window():
    # plain relabel_pre_takeover can only grow a window; relabel_with_k also shrinks it
    recorded = L(P, U, U, U, H, P)
    np.testing.assert_array_equal(relabel_with_k(recorded, 1), L(P, P, P, U, H, P))
    np.testing.assert_array_equal(relabel_pre_takeover(recorded, 1), recorded)


@pytest.mark.parametrize("bad", [L(P, 3, H), np.array([1, -1, 2]), np.array([0.0, 1.5, 2.0])])
def test_bad_label_values_raise(bad):
    with pytest.raises(ValueError, match="0, 1 or 2"):
        relabel_pre_takeover(bad, k=2)


def test_two_d_input_raises():
    with pytest.raises(ValueError, match="1-d"):
        relabel_pre_takeover(np.ones((2, 5), np.int8), k=2)


def test_negative_k_raises():
    with pytest.raises(ValueError, match="k must be >= 0"):
        relabel_pre_takeover(L(P, H), k=-1)


# ----- per episode: never reaching into another episode -----

def test_relabeling_is_per_episode_and_would_leak_if_concatenated():
    ep1 = L(P, P, P, H, H)          # ends with the person in control
    ep2 = L(P, P, H, P, P, P)       # starts with the policy; the person takes over at step 2
    k = 4
    sep1, sep2 = relabel_pre_takeover(ep1, k), relabel_pre_takeover(ep2, k)
    np.testing.assert_array_equal(sep1, L(U, U, U, H, H))
    np.testing.assert_array_equal(sep2, L(U, U, H, P, P, P))

    # ep2 whose first step is human after an episode that ended with a takeover: nothing leaks back
    ep3 = L(H, H, P, P)
    np.testing.assert_array_equal(relabel_pre_takeover(ep3, k), ep3)

    # concatenated, an episode that ends with policy steps followed by one that starts with the
    # person would create a spurious takeover at the boundary: this is why the runner relabels
    # each episode on its own
    ep4 = L(P, P, P, P)
    joint = relabel_pre_takeover(np.concatenate([ep4, ep3]), k)
    assert (joint[: len(ep4)] == U).any(), "the concatenated version leaks across the boundary"
    np.testing.assert_array_equal(relabel_pre_takeover(ep4, k), ep4)


# ----- policy_steps_before_window -----

def test_policy_steps_before_window_hand_worked():
    labels = relabel_pre_takeover(L(P, P, P, P, P, H, H, P, P, H, P, P), k=2)
    assert labels.tolist() == [P, P, P, U, U, H, H, U, U, H, P, P]
    # stretch 0-4 ends in a takeover: its policy steps before the window (0-2) are marked; the second
    # stretch is all window; the last one ends with the episode, not a takeover
    assert policy_steps_before_window(labels).tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]


def test_policy_steps_before_window_none_without_takeover():
    for labels in (L(P, P, P), L(H, H, P, P), L(H), np.array([], np.int8)):
        assert not policy_steps_before_window(labels).any()
    with pytest.raises(ValueError, match="1-d"):
        policy_steps_before_window(np.ones((2, 3), np.int8))


# ----- unrescued_person_steps, unrescued_undesirable_steps -----

@pytest.mark.parametrize("find, labels, marked, unmarked", [
    (unrescued_person_steps, L(P, U, H, H, P, H, P), [0, 0, 1, 1, 0, 1, 0], L(P, P, U)),
    (unrescued_undesirable_steps, L(U, U, H, P, U, H, P), [1, 1, 0, 0, 1, 0, 0], L(P, H, H)),
])
def test_unrescued_steps_only_in_failed_episodes(find, labels, marked, unmarked):
    assert find(labels, success=False).tolist() == marked
    assert not find(labels, success=True).any()
    assert not find(unmarked, success=False).any()  # none of the label looked for
    with pytest.raises(ValueError, match="1-d"):
        find(np.ones((2, 3), np.int8), success=False)
