"""run_episode / collect_interactions with a tiny real VLAPolicy on the real pick-place env."""

from __future__ import annotations

import json

import numpy as np
import pytest

import apo.deployment.collect as collect_mod
from apo.data import load_episodes
from apo.data.episode import LABEL_HUMAN as H, LABEL_POLICY as P, LABEL_UNDESIRABLE as U, Episode
from apo.deployment.collect import INTERACTION_SEED_BASE, collect_interactions
from apo.deployment.runner import DeployConfig, episode_triggers, run_episode
from apo.deployment.sources import Decision, InterventionSource
from apo.envs import EnvConfig, get_task, make_env

pytestmark = pytest.mark.slow

TASK = "pick-place-v3"
MAX_STEPS = 30
PERSON_ACTION = np.array([0.1, -0.2, 0.3, 1.0], np.float32)


class RecordingEnv:
    """The real env, remembering every action it executed; close() is a no-op (module fixture)."""

    def __init__(self, env):
        self.env = env
        self.executed: list[np.ndarray] = []

    def __getattr__(self, name):
        return getattr(self.env, name)

    def reset(self, **kw):
        self.executed = []
        return self.env.reset(**kw)

    def step(self, action):
        self.executed.append(np.array(action, np.float32))
        return self.env.step(action)

    def close(self):
        pass


class ScriptSource(InterventionSource):
    """Decides by call index (paused calls count too): ``plan(call, ctx) -> Decision``."""

    name = "script"

    def __init__(self, plan):
        self.plan = plan
        self.contexts = []
        self.resets: list[int] = []
        self.closed = False

    def reset(self, seed):
        self.resets.append(seed)
        self.contexts = []

    def decide(self, ctx):
        self.contexts.append(ctx)
        return self.plan(len(self.contexts) - 1, ctx)

    def close(self):
        self.closed = True


def takeover_at(steps):
    return lambda call, ctx: Decision(action=PERSON_ACTION.copy()) if ctx.t in steps else Decision()


@pytest.fixture(scope="module")
def env():
    e = make_env(TASK, EnvConfig(max_steps=MAX_STEPS))
    yield RecordingEnv(e)
    e.close()


@pytest.fixture(scope="module")
def policy(tiny_bin_policy):
    return tiny_bin_policy([get_task(TASK).instruction], seed=0, horizon=2)


def policy_first_action(policy, ep: Episode, t: int) -> np.ndarray:
    return policy.act({"image": ep.images[t], "proprio": ep.proprio[t], "instruction": ep.instruction})[0]


def spy_on_act(monkeypatch, policy, src):
    """Record (step index, returned chunk) of every policy.act call during an episode."""
    calls: list[tuple[int, np.ndarray]] = []
    real_act = policy.act

    def act(obs):
        chunk = real_act(obs)
        calls.append((len(src.contexts), chunk.copy()))  # the source is asked after the policy
        return chunk

    monkeypatch.setattr(policy, "act", act)
    return calls


def test_takeover_labels_actions_and_proposals(env, policy, monkeypatch):
    src = ScriptSource(takeover_at(range(12, 18)))
    calls = spy_on_act(monkeypatch, policy, src)
    ep, summary = run_episode(env, policy, src, seed=5, cfg=DeployConfig(k_undesirable=5, execute_steps=None))
    assert src.resets == [5]
    assert ep is not None and len(ep) == MAX_STEPS and not ep.success
    expect = np.array([P] * 7 + [U] * 5 + [H] * 6 + [P] * 12, np.int8)
    np.testing.assert_array_equal(ep.labels, expect)
    assert ep.labels.dtype == np.int8
    # summary counts the raw takeover, the person's steps
    assert summary.steps == MAX_STEPS and summary.human_steps == 6 and summary.takeovers == 1
    assert not summary.aborted and not summary.autonomous_success
    # the executed actions: the person's during the takeover, the policy's proposal otherwise
    np.testing.assert_array_equal(ep.actions[12:18], np.tile(PERSON_ACTION, (6, 1)))
    policy_steps = np.flatnonzero(ep.labels != H)
    np.testing.assert_array_equal(ep.actions[policy_steps], ep.policy_actions[policy_steps])
    np.testing.assert_array_equal(np.stack(env.executed), ep.actions)  # what was recorded is what ran
    # proposals are recorded at every step, also during the takeover, and are what the source saw
    assert ep.policy_actions.shape == ep.actions.shape
    assert np.isfinite(ep.policy_actions).all()
    assert [c.t for c in src.contexts] == list(range(MAX_STEPS))
    for t, c in enumerate(src.contexts):
        np.testing.assert_array_equal(c.policy_action, ep.policy_actions[t])
        np.testing.assert_array_equal(c.obs["image"], ep.images[t])
    # horizon 2: the policy plans every 2nd step while it acts, and at every step during the
    # takeover and right after it (re-planning from the current observation)
    assert [t for t, _ in calls] == [0, 2, 4, 6, 8, 10, 12, 13, 14, 15, 16, 17, 18, 20, 22, 24, 26, 28]
    for t, chunk in calls:
        np.testing.assert_array_equal(ep.policy_actions[t], chunk[0])
        if t not in range(11, 18):  # the chunk's second action is proposed at the next step
            np.testing.assert_array_equal(ep.policy_actions[t + 1], chunk[1])
    # and the proposals are the real policy's actions for the recorded observations
    for t in (0, 12, 15, 18):
        np.testing.assert_allclose(ep.policy_actions[t], policy_first_action(policy, ep, t), atol=1e-6)
    # episode bookkeeping
    assert ep.source == "interaction" and ep.seed == 5 and ep.task == TASK
    assert ep.dones.tolist() == [False] * (MAX_STEPS - 1) + [True]
    assert ep.extras["takeovers"] == "1" and ep.extras["k_undesirable"] == "5" and ep.extras["source"] == "script"
    assert ep.extras["triggers"] == ""  # this source reports no triggers
    ep.validate()


def test_the_sources_triggers_are_recorded_with_the_episode(env, policy):
    class Reporting(ScriptSource):
        def decide(self, ctx):
            if ctx.t in (3, 9):
                self.triggers.append((ctx.t, "divergence" if ctx.t == 3 else "no_progress"))
            return super().decide(ctx)

        def reset(self, seed):
            super().reset(seed)
            self.triggers = []

    src = Reporting(takeover_at(range(4, 6)))
    ep, _ = run_episode(env, policy, src, seed=1, cfg=DeployConfig(execute_steps=1))
    assert ep.extras["triggers"] == "3:divergence 9:no_progress"
    assert json.loads(ep.extras["rendering"]) == env.config.rendering()
    assert episode_triggers(ep) == [(3, "divergence"), (9, "no_progress")]  # round trip


def test_execute_steps_one_replans_every_step(env, policy, monkeypatch):
    src = ScriptSource(lambda call, ctx: Decision(stop=ctx.t == 3))
    calls = spy_on_act(monkeypatch, policy, src)
    ep, summary = run_episode(env, policy, src, seed=5, cfg=DeployConfig(execute_steps=1))
    assert len(ep) == 4 and summary.takeovers == 0  # stop ends the episode after the step
    assert (ep.labels == P).all()
    assert [t for t, _ in calls] == [0, 1, 2, 3]
    for t, chunk in calls:
        np.testing.assert_array_equal(ep.policy_actions[t], chunk[0])
        np.testing.assert_array_equal(ep.actions[t], chunk[0])


def test_paused_steps_record_nothing_and_hold_still(env, policy):
    # calls 4, 5, 6 are paused (device lost); the robot holds still with the last gripper command
    src = ScriptSource(lambda call, ctx: Decision(paused=True) if call in (4, 5, 6)
                       else Decision(action=PERSON_ACTION.copy()) if call in (2, 3) else Decision())
    ep, summary = run_episode(env, policy, src, seed=6, cfg=DeployConfig(k_undesirable=1))
    executed = np.stack(env.executed)
    assert len(executed) == MAX_STEPS  # the env still advances during the pause
    assert len(ep) == MAX_STEPS - 3 and summary.steps == MAX_STEPS - 3
    for i in (4, 5, 6):
        np.testing.assert_array_equal(executed[i], [0, 0, 0, PERSON_ACTION[3]])
    kept = np.delete(executed, [4, 5, 6], axis=0)
    np.testing.assert_array_equal(kept, ep.actions)
    np.testing.assert_array_equal(ep.labels[:5], [P, U, H, H, P])
    # the step index given to the source does not advance while paused
    assert [c.t for c in src.contexts[:9]] == [0, 1, 2, 3, 4, 4, 4, 4, 5]
    assert not summary.aborted


def test_pause_counter_resets_after_a_recorded_step(env, policy):
    # pauses of 2 calls separated by recorded steps never reach max_pause_steps=3 in a row
    src = ScriptSource(lambda call, ctx: Decision(paused=call in (2, 3, 5, 6, 8, 9)))
    ep, summary = run_episode(env, policy, src, seed=6, cfg=DeployConfig(max_pause_steps=3))
    assert not summary.aborted and len(ep) == MAX_STEPS - 6


def test_pause_from_the_start_holds_gripper_open_and_max_pause_aborts(env, policy):
    src = ScriptSource(lambda call, ctx: Decision(paused=True))
    ep, summary = run_episode(env, policy, src, seed=7, cfg=DeployConfig(max_pause_steps=4))
    assert ep is None and summary.steps == 0 and summary.aborted
    assert len(env.executed) == 4
    np.testing.assert_array_equal(np.stack(env.executed), np.tile([0, 0, 0, -1.0], (4, 1)))


def test_max_pause_steps_aborts_mid_episode(env, policy):
    src = ScriptSource(lambda call, ctx: Decision(paused=True) if call >= 5 else Decision(mark="failure" if call == 1 else None))
    ep, summary = run_episode(env, policy, src, seed=7, cfg=DeployConfig(max_pause_steps=3))
    assert summary.aborted and len(ep) == 5 and len(env.executed) == 8
    assert summary.mark == "failure" and ep.extras["aborted"] == "True" and ep.extras["mark"] == "failure"
    ep.validate()


def test_deploy_config_validation():
    with pytest.raises(ValueError):
        DeployConfig(k_undesirable=-1)
    with pytest.raises(ValueError):
        DeployConfig(execute_steps=0)


def test_collect_interactions_writes_and_resumes(env, policy, tmp_path, monkeypatch):
    env_cfg = EnvConfig(max_steps=MAX_STEPS)
    made = []

    def shared_env(task, cfg):
        assert task == TASK and cfg == env_cfg
        made.append(task)
        return env

    monkeypatch.setattr(collect_mod, "make_env", shared_env)
    sources: list[ScriptSource] = []

    def make_source(task):
        sources.append(ScriptSource(takeover_at(range(10, 14))))
        return sources[-1]

    out = tmp_path / "interactions"
    cfg = DeployConfig(k_undesirable=3)
    s1 = collect_interactions(policy, (TASK,), 1, make_source, out, cfg=cfg, env_cfg=env_cfg, seed=0)
    assert s1.episodes == 1 and s1.takeovers == 1 and s1.human_steps == 4 and s1.steps == MAX_STEPS
    assert sources[0].resets == [INTERACTION_SEED_BASE] and sources[0].closed
    assert (out / "stats.json").exists()
    data = json.loads((out / "summary.json").read_text())
    assert data["summary"]["episodes"] == 1 and data["deploy"]["k_undesirable"] == 3
    assert data["summary"]["intervention_rate"] == pytest.approx(4 / MAX_STEPS)

    # re-run asking for 2: the recorded episode (same seed) is skipped, only one new episode runs
    s2 = collect_interactions(policy, (TASK,), 2, make_source, out, cfg=cfg, env_cfg=env_cfg, seed=0)
    assert sources[1].resets == [INTERACTION_SEED_BASE + 1]
    eps = load_episodes(out)
    assert len(eps) == 2 and sorted(e.seed for e in eps) == [INTERACTION_SEED_BASE, INTERACTION_SEED_BASE + 1]
    assert s2.episodes == 2 and s2.takeovers == 2 and s2.human_steps == 8 and s2.steps == 2 * MAX_STEPS
    data = json.loads((out / "summary.json").read_text())
    assert data["summary"]["episodes"] == 2 and data["per_task"][TASK]["human_steps"] == 8
    assert data["per_task"][TASK]["intervention_rate"] == pytest.approx(8 / (2 * MAX_STEPS))
    assert data["triggers"] == {TASK: {}}  # this source reports no triggers
    for ep in eps:  # recorded safely: valid interaction episodes with proposals and relabeled labels
        ep.validate()
        assert ep.source == "interaction" and ep.policy_actions is not None and ep.task == TASK
        np.testing.assert_array_equal(ep.labels, [P] * 7 + [U] * 3 + [H] * 4 + [P] * 16)
        np.testing.assert_array_equal(ep.actions[10:14], np.tile(PERSON_ACTION, (4, 1)))
    assert len(made) == 2


def test_a_kill_mid_episode_loses_only_that_episode(env, policy, tmp_path, monkeypatch):
    env_cfg = EnvConfig(max_steps=MAX_STEPS)
    monkeypatch.setattr(collect_mod, "make_env", lambda task, cfg: env)
    sources: list[ScriptSource] = []

    def interrupted(task):
        # the person's process is killed (Ctrl-C) at step 5 of the second episode
        def plan(call, ctx):
            if len(src.resets) == 2 and ctx.t == 5:
                raise KeyboardInterrupt
            return Decision(action=PERSON_ACTION.copy()) if ctx.t in (3, 4) else Decision()

        src = ScriptSource(plan)
        sources.append(src)
        return src

    out = tmp_path / "interactions"
    with pytest.raises(KeyboardInterrupt):
        collect_interactions(policy, (TASK,), 3, interrupted, out, env_cfg=env_cfg)
    assert sources[0].closed  # the device is released on the way out
    (kept,) = load_episodes(out)  # the finished episode is on disk, the interrupted one left nothing
    assert kept.seed == INTERACTION_SEED_BASE and len(kept) == MAX_STEPS
    assert sorted(p.name for p in (out / "episodes").iterdir()) == ["demo_000000.hdf5"]
    first = (out / "episodes" / "demo_000000.hdf5").read_bytes()

    # rerunning the command continues: the recorded episode is skipped, the other two are collected
    summary = collect_interactions(policy, (TASK,), 3, lambda task: ScriptSource(takeover_at((3, 4))), out,
                                   env_cfg=env_cfg)
    eps = load_episodes(out)
    assert [ep.seed for ep in eps] == [INTERACTION_SEED_BASE + i for i in range(3)]
    assert (out / "episodes" / "demo_000000.hdf5").read_bytes() == first
    assert summary.episodes == 3 and summary.takeovers == 3 and summary.human_steps == 6


def test_collection_summary_line():
    s = collect_mod.CollectionSummary(episodes=4, steps=100, human_steps=25, takeovers=6, successes=3,
                                      autonomous_successes=1)
    assert s.describe() == ("4 episodes: intervention rate 25.0%, 1.50 takeovers/episode, "
                            "success 75% with help, 25% without")
    d = s.as_dict()
    assert d["success_rate_with_help"] == 0.75 and d["success_rate_without_help"] == 0.25


def test_a_missing_device_fails_before_any_env_is_built(policy, tmp_path, monkeypatch):
    from apo.deployment.devices import DeviceNotFoundError

    built = []
    monkeypatch.setattr(collect_mod, "make_env", lambda task, cfg: built.append(task))

    def no_gamepad(task):
        raise DeviceNotFoundError("no gamepad #0 found: plug one in")

    with pytest.raises(DeviceNotFoundError, match="plug one in"):
        collect_interactions(policy, (TASK,), 1, no_gamepad, tmp_path / "interactions")
    assert built == [] and not list((tmp_path / "interactions" / "episodes").glob("*.hdf5"))


def test_a_policy_trained_on_other_images_fails_before_any_env_is_built(policy, tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(collect_mod, "make_env", lambda task, cfg: built.append(task))
    monkeypatch.setattr(policy, "rendering", EnvConfig(goal_pin=True).rendering())
    with pytest.raises(ValueError, match="goal_pin True there, False here.*--env.goal-pin"):
        collect_interactions(policy, (TASK,), 1, lambda task: None, tmp_path / "interactions")
    assert built == []


def test_trigger_counts_per_task():
    from types import SimpleNamespace

    def ep(task, **extras):
        return SimpleNamespace(task=task, seed=7, extras=extras)

    eps = [ep("a", triggers="40:no_progress 97:object_lost"), ep("a", triggers="12:no_progress"),
           ep("b", triggers=""), ep("c")]  # c: recorded before triggers were kept
    assert collect_mod.trigger_counts(eps) == {"a": {"no_progress": 2, "object_lost": 1}, "b": {}, "c": {}}
    for bad in ("no_progress", "40:", "x:no_progress"):
        with pytest.raises(ValueError, match=f"malformed trigger '{bad}'.*seed 7|seed 7.*malformed trigger '{bad}'"):
            collect_mod.trigger_counts([ep("a", triggers=f"3:divergence {bad}")])


def test_episode_counts_per_task(env, policy, tmp_path, monkeypatch):
    env_cfg = EnvConfig(max_steps=MAX_STEPS)
    built = []
    monkeypatch.setattr(collect_mod, "make_env", lambda task, cfg: built.append(task) or env)
    with pytest.raises(ValueError, match=r"no episode count for task\(s\) \['other-v3'\]"):
        collect_interactions(policy, (TASK, "other-v3"), {TASK: 2}, lambda task: ScriptSource(takeover_at(())),
                             tmp_path / "bad", env_cfg=env_cfg)
    assert built == []  # refused before anything was built
    summary = collect_interactions(policy, (TASK,), {TASK: 2}, lambda task: ScriptSource(takeover_at(())),
                                   tmp_path / "interactions", env_cfg=env_cfg, seed=7)
    assert summary.episodes == 2
    assert [ep.seed for ep in load_episodes(tmp_path / "interactions")] == [INTERACTION_SEED_BASE + 7,
                                                                           INTERACTION_SEED_BASE + 8]
