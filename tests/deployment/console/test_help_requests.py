"""A robot that asks for help: calibration, the requester, the uncertainty wrapper, the simulated
person who honours requests / watches only when asked."""

from __future__ import annotations

import math

import numpy as np
import pytest

from apo.deployment.console.help import (
    HelpConfig, HelpRequester, UncertaintyPolicy, autonomous_entropies, calibrate_threshold, entropy_to_confidence,
    make_requester,
)
from apo.deployment.simulated import SimulatedPerson, SimulatedPersonConfig
from apo.deployment.sources import StepContext

from console_helpers import CONSOLE_TASK


def test_calibrate_threshold_is_the_budget_quantile():
    e = np.random.default_rng(0).gamma(2.0, 1.0, 5000)
    for budget in (0.05, 0.1, 0.3):
        thr = calibrate_threshold(e, budget)
        assert thr == pytest.approx(np.quantile(e, 1 - budget))
        assert (e > thr).mean() == pytest.approx(budget, abs=2e-3)
    assert calibrate_threshold([1.0, 2.0, 3.0, 4.0, 5.0], 0.25) == pytest.approx(4.0)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="budget"):
            calibrate_threshold(e, bad)
    with pytest.raises(ValueError, match="no entropies"):
        calibrate_threshold([], 0.1)
    with pytest.raises(ValueError, match="finite"):
        calibrate_threshold([1.0, float("nan")], 0.1)


def test_help_requester_patience_and_counting():
    r = HelpRequester(1.0, patience=2)
    seq = [0.5, 1.5, 1.6, 1.7, 0.2, 2.0, 2.0, 1.0]
    got = [r.observe(e) for e in seq]
    assert got == [False, False, True, True, False, False, True, False]
    assert r.requests == 2 and not r() and r.last_entropy == 1.0
    r.observe(3.0)
    r.observe(3.0)
    assert r()
    r.reset()
    assert not r() and r.requests == 0
    assert HelpRequester.calibrated([1.0, 2.0, 3.0, 4.0, 5.0], 0.25).threshold == pytest.approx(4.0)
    with pytest.raises(ValueError):
        HelpRequester(1.0, patience=0)
    with pytest.raises(ValueError):
        HelpRequester(math.inf)


def test_entropy_to_confidence():
    assert entropy_to_confidence(0.0, 2.0) == 1.0
    assert entropy_to_confidence(2.0, 2.0) == 0.0
    assert entropy_to_confidence(1.0, 2.0) == pytest.approx(0.5)
    assert entropy_to_confidence(3.0, 2.0) == 0.0
    assert entropy_to_confidence(None, 2.0) is None


def test_help_config():
    assert not HelpConfig().enabled and HelpConfig(budget=0.1).enabled and HelpConfig(threshold=1.0).enabled
    with pytest.raises(ValueError):
        HelpConfig(budget=1.0)
    with pytest.raises(ValueError):
        HelpConfig(patience=0)
    assert make_requester(None, HelpConfig(), ("x",)) is None
    assert make_requester(None, HelpConfig(threshold=0.7, patience=3), ("x",)).patience == 3


def test_uncertainty_policy_measures_the_chunk_entropy(console_policy):
    from apo.envs import get_task

    obs = {"image": np.full((64, 64, 3), 90, np.uint8), "proprio": np.array([0.0, 0.6, 0.2, 0.5], np.float32),
           "instruction": get_task(CONSOLE_TASK).instruction}
    requester = HelpRequester(threshold=0.0)
    wrapped = UncertaintyPolicy(console_policy, requester)
    assert wrapped.tokenizer is console_policy.tokenizer and wrapped.confidence is None
    chunk = wrapped.act(obs)
    np.testing.assert_array_equal(chunk, console_policy.act(obs))
    _, info = console_policy.act_batch(obs["image"][None], obs["proprio"][None], [obs["instruction"]], return_info=True)
    assert wrapped.last_entropy == pytest.approx(float(info["entropy"][0].mean()))
    assert 0 < wrapped.last_entropy <= math.log(console_policy.config.vocab_size) + 1e-6
    assert 0.0 <= wrapped.confidence <= 1.0
    assert wrapped.requesting and requester.requests == 1  # every entropy is above 0
    wrapped.reset()
    assert wrapped.last_entropy is None and not wrapped.requesting


# ----- the simulated person and help requests (one real MetaWorld state) -----

def _ctx(state, t, policy_action):
    return StepContext(t, {}, state, policy_action, 0.0, False)


def _diverging(person, state):
    return person.expert.act(state) + np.array([1.0, 1.0, 1.0, 0.0], np.float32)


def test_watch_on_request_needs_a_signal():
    with pytest.raises(ValueError, match="help signal"):
        SimulatedPerson(CONSOLE_TASK, SimulatedPersonConfig(watch="on_request"))
    with pytest.raises(ValueError, match="watch"):
        SimulatedPersonConfig(watch="sometimes")


def test_person_honours_a_request(pick_place_state):
    asked = [False]
    cfg = SimulatedPersonConfig(honour_requests=True, max_reaction_delay=0, hold_steps=3)
    person = SimulatedPerson(CONSOLE_TASK, cfg, help_signal=lambda: asked[0])
    agree = person.expert.act(pick_place_state)
    assert person.decide(_ctx(pick_place_state, 0, agree)).action is None
    asked[0] = True
    d = person.decide(_ctx(pick_place_state, 1, agree))
    assert d.action is not None and person.triggers == [(1, "help_request")] and person.takeovers == 1
    # without honour_requests the same request changes nothing
    person = SimulatedPerson(CONSOLE_TASK, SimulatedPersonConfig(max_reaction_delay=0), help_signal=lambda: True)
    assert all(person.decide(_ctx(pick_place_state, t, agree)).action is None for t in range(5))


def test_person_who_watches_only_on_request(pick_place_state):
    asked = [False]
    cfg = SimulatedPersonConfig(watch="on_request", max_reaction_delay=0, divergence_steps=3, no_progress_steps=0)
    person = SimulatedPerson(CONSOLE_TASK, cfg, help_signal=lambda: asked[0])
    bad = _diverging(person, pick_place_state)
    # not asked: the diverging policy goes unseen
    assert all(person.decide(_ctx(pick_place_state, t, bad)).action is None for t in range(6))
    assert person.watched_steps == 0 and person.takeovers == 0
    # asked: the person looks, sees the divergence for 3 steps and takes over
    asked[0] = True
    acted = [person.decide(_ctx(pick_place_state, t, bad)).action is not None for t in range(6, 10)]
    assert acted == [False, False, True, True] and person.triggers == [(8, "divergence")]
    assert person.watched_steps == 4
    # the always-watching person (default) sees it from the start
    always = SimulatedPerson(CONSOLE_TASK, SimulatedPersonConfig(max_reaction_delay=0, divergence_steps=3,
                                                                 no_progress_steps=0))
    acted = [always.decide(_ctx(pick_place_state, t, bad)).action is not None for t in range(4)]
    assert acted == [False, False, True, True] and always.watched_steps == 4


@pytest.mark.slow
def test_help_in_the_loop(console_policy):
    from apo.deployment.runner import DeployConfig, run_episode
    from apo.envs import EnvConfig, make_env

    env_cfg = EnvConfig(max_steps=10)
    entropies = autonomous_entropies(console_policy, (CONSOLE_TASK,), 1, env_cfg)
    assert entropies.shape == (10,) and np.isfinite(entropies).all()
    requester = make_requester(console_policy, HelpConfig(budget=0.5, calibration_episodes=1), (CONSOLE_TASK,), env_cfg)
    assert requester.threshold == pytest.approx(np.quantile(entropies, 0.5))

    env = make_env(CONSOLE_TASK, env_cfg)
    try:
        cfg = SimulatedPersonConfig(watch="on_request", honour_requests=True, max_reaction_delay=0, hold_steps=3)
        # a robot that always asks: the person takes over at once
        always_asks = UncertaintyPolicy(console_policy, HelpRequester(threshold=-1.0))
        person = SimulatedPerson(CONSOLE_TASK, cfg, help_signal=always_asks.requester)
        episode, summary = run_episode(env, always_asks, person, 5, DeployConfig(k_undesirable=2))
        assert summary.human_steps > 0 and person.triggers[0] == (0, "help_request")
        assert person.watched_steps == summary.steps
        # a robot that never asks: the person never looks
        never_asks = UncertaintyPolicy(console_policy, HelpRequester(threshold=1e6))
        person = SimulatedPerson(CONSOLE_TASK, cfg, help_signal=never_asks.requester)
        episode, summary = run_episode(env, never_asks, person, 5, DeployConfig(k_undesirable=2))
        assert summary.human_steps == 0 and person.watched_steps == 0
        np.testing.assert_array_equal(episode.labels, 1)
    finally:
        env.close()
