"""Helpers of the console tests (imported by name: a unique module name, no clash with other conftests)."""

from __future__ import annotations

import zlib

import torch

CONSOLE_TASK = "pick-place-v3"


def fake_instruction_embedding(text: str) -> torch.Tensor:
    """A deterministic unit 384-d vector per text (stands in for the sentence encoder)."""
    g = torch.Generator().manual_seed(zlib.crc32(text.encode()))
    v = torch.randn(384, generator=g)
    return v / v.norm()


def build_tiny_policy(tmp_path, task: str = CONSOLE_TASK, horizon: int = 2, seed: int = 0):
    """``build_policy`` (the base-policy recipe) from synthetic stats, d_model 32, 1 layer, 2 heads; the
    task's instruction embedding is cached, so the sentence encoder is never loaded."""
    from apo.data import DatasetStats
    from apo.envs import get_task
    from apo.models import VLAConfig
    from apo.training.base_policy import BaseRecipe, build_policy

    DatasetStats(action_q01=[-1.0] * 4, action_q99=[1.0] * 4, proprio_mean=[0.0, 0.6, 0.15, 0.5],
                 proprio_std=[0.1, 0.1, 0.1, 0.5], num_steps=1).save(tmp_path)
    torch.manual_seed(seed)
    recipe = BaseRecipe(horizon=horizon, n_bins=32, tokenizer="bin", model=VLAConfig(d_model=32, n_layers=1, n_heads=2))
    policy = build_policy(tmp_path, recipe, image_size=64)
    instruction = get_task(task).instruction
    policy._instructions[instruction] = fake_instruction_embedding(instruction)
    return policy.eval()


def wait_for(predicate, timeout: float = 20.0, what: str = "condition", interval: float = 0.01):
    """Poll ``predicate`` until it returns a truthy value (returned) or fail after ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def check_takeover_labels(labels, k: int) -> tuple[int, int]:
    """One takeover [a, b): labels 2 there, 0 for the k policy steps before it, 1 everywhere else."""
    import numpy as np

    labels = np.asarray(labels)
    human = np.flatnonzero(labels == 2)
    assert len(human) > 0, f"no person step recorded: {labels.tolist()}"
    a, b = int(human[0]), int(human[-1]) + 1
    assert (labels[a:b] == 2).all(), f"the takeover is not one block: {labels.tolist()}"
    assert a >= k, f"takeover at step {a}, before {k} policy steps: {labels.tolist()}"
    expected = np.ones_like(labels)
    expected[a - k:a] = 0
    expected[a:b] = 2
    np.testing.assert_array_equal(labels, expected)
    return a, b


class RecordingEnv:
    """The real env, remembering the actions executed since the last reset."""

    def __init__(self, env):
        self.env = env
        self.episodes: list[list] = []

    def __getattr__(self, name):
        return getattr(self.env, name)

    def reset(self, **kw):
        self.episodes.append([])
        return self.env.reset(**kw)

    def step(self, action):
        import numpy as np

        self.episodes[-1].append(np.array(action, np.float32))
        return self.env.step(action)

    def close(self):
        self.env.close()


def assert_held_still(executed, recorded_actions, closed_at: int, pause_steps: int) -> None:
    """After the page closed (``closed_at`` actions executed in the episode), nothing more was recorded
    (but the one step in flight) and every later executed action is a hold: zero motion, gripper kept,
    until the episode was aborted after ``pause_steps`` paused steps."""
    import numpy as np

    executed = np.asarray(executed)
    assert len(recorded_actions) <= closed_at + 1, "steps were recorded after the page closed"
    after = executed[closed_at + 1:]
    assert pause_steps - 1 <= len(after) <= pause_steps
    np.testing.assert_array_equal(after[:, :3], 0.0)
    np.testing.assert_array_equal(after[:, 3], recorded_actions[-1][3])
