"""Per-step labels of interaction episodes and the relabeling of pre-takeover steps.

During deployment every step is recorded as ``LABEL_POLICY`` (1) or ``LABEL_HUMAN`` (2).
Afterwards, the K policy steps just before each takeover (a 1 -> 2 transition) are relabeled
``LABEL_UNDESIRABLE`` (0): they are what led the person to intervene.

Rules (one episode at a time; never reaches into another episode or a demonstration):
* a window covers at most K steps and only the *contiguous* policy steps just before the
  takeover: it stops at an earlier human step, so human actions are never relabeled;
* a takeover at step t < K relabels only the t steps that exist;
* windows of takeovers close together simply overlap (their union is relabeled);
* a human who is in control from the first step is not a takeover (nothing to relabel).

``relabel_with_k`` changes the K of recorded labels afterwards (e.g. ``apo refine --refine.k-undesirable``):
the undesirable steps were policy steps, so they are reset to 1 and the window is drawn again.

``policy_steps_before_window`` finds the policy steps (1) of a stretch that ended in a takeover but lie
before its K-step window: with a person who steps in after a stall they look like the undesirable ones
(``apo refine --refine.pre-window-steps drop`` leaves them out).

``unrescued_person_steps`` finds the person's steps (2) of an episode that failed despite them: help that
did not rescue it (``apo refine --refine.corrections rescued`` leaves them out). ``unrescued_undesirable_steps``
finds that episode's undesirable steps (0): the windows before takeovers whose help did not rescue it
(``apo refine --refine.undesirable rescued`` leaves them out).
"""

from __future__ import annotations

import numpy as np

from apo.data.episode import LABEL_HUMAN, LABEL_POLICY, LABEL_UNDESIRABLE


def takeover_steps(labels: np.ndarray) -> np.ndarray:
    """Indices t where the person takes over from the policy (labels[t-1] is policy, labels[t] human)."""
    labels = np.asarray(labels)
    acted_by_policy = labels != LABEL_HUMAN  # 1, or 0 if already relabeled
    return np.flatnonzero((labels[1:] == LABEL_HUMAN) & acted_by_policy[:-1]) + 1


def relabel_pre_takeover(labels: np.ndarray, k: int = 10) -> np.ndarray:
    """Return a copy of one episode's labels with the K policy steps before each takeover set to 0."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels of one episode must be 1-d, got shape {labels.shape}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    bad = ~np.isin(labels, (LABEL_UNDESIRABLE, LABEL_POLICY, LABEL_HUMAN))
    if bad.any():
        raise ValueError(f"labels must be 0, 1 or 2; got {np.unique(labels[bad])}")
    out = labels.astype(np.int8, copy=True)
    for t in takeover_steps(labels):
        s = t - 1
        while s >= 0 and s >= t - k and labels[s] != LABEL_HUMAN:
            out[s] = LABEL_UNDESIRABLE
            s -= 1
    return out


def relabel_with_k(labels: np.ndarray, k: int) -> np.ndarray:
    """Recorded labels (0/1/2) of one episode relabeled with another window K, as if collected with it."""
    labels = np.asarray(labels)
    return relabel_pre_takeover(np.where(labels == LABEL_UNDESIRABLE, LABEL_POLICY, labels), k)


def policy_steps_before_window(labels: np.ndarray) -> np.ndarray:
    """(T,) bool: the label-1 steps of one episode whose stretch of policy steps ends in a takeover.

    A stretch is a run of policy steps (0 or 1) between human steps; its 0s are the undesirable window,
    so what this marks are its earlier steps, still labelled desirable. Stretches that end with the
    episode are not marked.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels of one episode must be 1-d, got shape {labels.shape}")
    out = np.zeros(labels.shape, bool)
    for t in takeover_steps(labels):
        s = t - 1
        while s >= 0 and labels[s] != LABEL_HUMAN:
            out[s] = labels[s] == LABEL_POLICY
            s -= 1
    return out


def _steps_of_failed_episode(labels: np.ndarray, success: bool, label: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels of one episode must be 1-d, got shape {labels.shape}")
    return (labels == label) & (not success)


def unrescued_person_steps(labels: np.ndarray, success: bool) -> np.ndarray:
    """(T,) bool: the person's steps (2) of one episode that failed anyway; none if it succeeded."""
    return _steps_of_failed_episode(labels, success, LABEL_HUMAN)


def unrescued_undesirable_steps(labels: np.ndarray, success: bool) -> np.ndarray:
    """(T,) bool: the undesirable steps (0) of one episode that failed anyway; none if it succeeded."""
    return _steps_of_failed_episode(labels, success, LABEL_UNDESIRABLE)
