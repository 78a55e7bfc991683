"""Evaluation: seeded lockstep rollouts, eval.json, videos, the Wilson interval."""

from __future__ import annotations

import json
import re

import imageio.v2 as imageio
import numpy as np
import pytest

from apo.envs import CameraConfig, EnvConfig
from apo.evaluation import EVAL_SEED_BASE, EvalConfig, TaskResult, evaluate, success_table
from apo.evaluation.rollout import results_to_dict


@pytest.mark.slow
def test_evaluate_tiny_policy(tmp_path, tiny_policy, task):
    cfg = EvalConfig(tasks=(task,), episodes=2, parallel_envs=2, videos_per_task=1)
    results = evaluate(tiny_policy, cfg, EnvConfig(image_size=64, max_steps=10), tmp_path)
    assert list(results) == [task]
    r = results[task]
    assert r.seeds == [EVAL_SEED_BASE, EVAL_SEED_BASE + 1]
    assert len(r.successes) == len(r.lengths) == 2
    # an untrained policy does not solve pick-place in 10 steps: every episode hits the cap
    assert r.successes == [False, False] and r.lengths == [10, 10]

    payload = json.loads((tmp_path / "eval.json").read_text())
    tr = payload["results"][task]
    assert tr["seeds"] == r.seeds and tr["episodes"] == 2 and tr["success_rate"] == 0.0
    assert tr["lengths"] == [10, 10]
    assert payload["results"]["average"]["success_rate"] == 0.0
    assert payload["config"]["episodes"] == 2 and payload["config"]["tasks"] == [task]

    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    assert [v.name for v in videos] == [f"{task}_ep000_failure.mp4"]  # videos_per_task=1: first episode only
    reader = imageio.get_reader(videos[0])
    frames = [f for f in reader]
    reader.close()
    assert len(frames) == 11  # the reset frame + one per step
    assert frames[0].shape == (256, 256, 3)  # 64 px upscaled 4x


@pytest.mark.slow
def test_episodes_beyond_parallel_envs_run_in_further_batches(tiny_policy, task):
    cfg = EvalConfig(tasks=(task,), episodes=3, parallel_envs=2, execute_steps=1)
    r = evaluate(tiny_policy, cfg, EnvConfig(image_size=64, max_steps=3))[task]
    assert r.seeds == [EVAL_SEED_BASE + i for i in range(3)]
    assert r.lengths == [3, 3, 3]


def test_image_size_mismatch(tiny_policy, task):
    with pytest.raises(ValueError, match="image_size 64 there, 32 here.*--env.image-size 64"):
        evaluate(tiny_policy, EvalConfig(tasks=(task,), episodes=1), EnvConfig(image_size=32))


@pytest.mark.parametrize("trained, deployed, fix", [
    (EnvConfig(goal_pin=True), EnvConfig(), "--env.goal-pin"),
    (EnvConfig(), EnvConfig(goal_pin=True), "leave out --env.goal-pin"),
    (EnvConfig(), EnvConfig(camera=CameraConfig(azimuth=90.0)), "--env.camera.azimuth 140.0"),
])
def test_rendering_mismatch_names_the_fix(tiny_policy, task, trained, deployed, fix, monkeypatch):
    monkeypatch.setattr(tiny_policy, "rendering", trained.rendering())
    with pytest.raises(ValueError, match=re.escape(fix)):
        evaluate(tiny_policy, EvalConfig(tasks=(task,), episodes=1), deployed)


@pytest.mark.parametrize("kwargs", [dict(episodes=0), dict(parallel_envs=0), dict(execute_steps=0),
                                    dict(videos_per_outcome=-1), dict(videos_per_task=-1)])
def test_eval_config_validation(kwargs):
    with pytest.raises(ValueError):
        EvalConfig(**kwargs)


def test_ci95_hand_worked():
    # Wilson interval, z = 1.96. 2/4: centre 0.5, half-width 1.96*sqrt(.25/4 + 1.96^2/64)/(1 + 1.96^2/4)
    half = 1.96 * np.sqrt(0.25 / 4 + 1.96**2 / 64) / (1 + 1.96**2 / 4)
    lo, hi = TaskResult("t", successes=[True, False, True, False]).ci95()
    assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half))
    assert (lo, hi) == pytest.approx((0.1500, 0.8500), abs=5e-4)
    # 0/10: lower bound 0, upper z^2/n / (1 + z^2/n)
    lo, hi = TaskResult("t", successes=[False] * 10).ci95()
    assert lo == 0.0 and hi == pytest.approx(0.38416 / 1.38416)
    # 10/10 mirrors it
    lo, hi = TaskResult("t", successes=[True] * 10).ci95()
    assert hi == 1.0 and lo == pytest.approx(1 - 0.38416 / 1.38416)
    assert TaskResult("t").ci95() == (0.0, 1.0)


def test_success_rate_and_results_dict():
    r1 = TaskResult("a", successes=[True, True, False, True], lengths=[5, 6, 10, 7], seeds=[0, 1, 2, 3])
    r2 = TaskResult("b", successes=[False, False], lengths=[10, 10], seeds=[0, 1])
    assert r1.success_rate == 0.75 and TaskResult("c").success_rate == 0.0
    d = results_to_dict({"a": r1, "b": r2})
    assert d["a"]["success_rate"] == 0.75 and d["a"]["episodes"] == 4
    assert d["average"]["success_rate"] == pytest.approx(0.375)
    json.dumps(d)  # serializable
    table = success_table({"a": r1, "b": r2})
    assert table.row_count == 3


class SeedEnv:
    """No simulation: an episode succeeds at its 3rd step if its seed is in ``winners``, else it ends at 4."""

    def __init__(self, winners):
        self.winners, self.seed, self.t = winners, None, 0

    def _obs(self):
        return {"image": np.full((8, 8, 3), self.t * 20, np.uint8), "proprio": np.zeros(4, np.float32),
                "instruction": "x"}

    def reset(self, seed):
        self.seed, self.t = seed, 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        success = self.seed in self.winners and self.t == 3
        return self._obs(), 0.0, success, self.t >= 4 and not success, {"success": success}

    def close(self):
        pass


class ZeroPolicy:
    class tokenizer:
        horizon = 2

    def act_batch(self, images, proprio, instructions):
        return np.zeros((len(images), 2, 4), np.float32)


@pytest.mark.parametrize("per_task", [0, 2])
def test_videos_per_outcome_saves_the_first_success_and_failure(tmp_path, monkeypatch, per_task):
    import apo.evaluation.rollout as rollout

    winners = {EVAL_SEED_BASE + 3, EVAL_SEED_BASE + 4}  # episodes 3 and 4 succeed, in the 2nd and 3rd batch
    monkeypatch.setattr(rollout, "make_env", lambda task, cfg: SeedEnv(winners))
    cfg = EvalConfig(tasks=("t",), episodes=6, parallel_envs=2, videos_per_task=per_task, videos_per_outcome=1)
    r = rollout.run_task(ZeroPolicy(), "t", cfg, EnvConfig(), tmp_path)
    assert r.successes == [False, False, False, True, True, False]
    assert r.lengths == [4, 4, 4, 3, 3, 4]
    names = sorted(p.name for p in tmp_path.glob("*.mp4"))
    # the first per_task episodes, then the first success and (if not among them) the first failure
    expect = {0: ["t_ep000_failure.mp4", "t_ep003_success.mp4"],
              2: ["t_ep000_failure.mp4", "t_ep001_failure.mp4", "t_ep003_success.mp4"]}[per_task]
    assert names == expect
    reader = imageio.get_reader(tmp_path / "t_ep003_success.mp4")
    assert len([f for f in reader]) == 4  # the reset frame + 3 steps
    reader.close()
