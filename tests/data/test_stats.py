"""DatasetStats: computation, persistence, error messages."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from apo.data import DatasetError, DatasetStats, load_episodes


def test_compute_matches_numpy(make_episode):
    eps = [make_episode(T=30, seed=0), make_episode(T=50, seed=1)]
    stats = DatasetStats.compute(eps)
    actions = np.concatenate([e.actions for e in eps]).astype(np.float64)
    proprio = np.concatenate([e.proprio for e in eps]).astype(np.float64)
    np.testing.assert_allclose(stats.action_q01, np.quantile(actions, 0.01, axis=0))
    np.testing.assert_allclose(stats.action_q99, np.quantile(actions, 0.99, axis=0))
    np.testing.assert_allclose(stats.proprio_mean, proprio.mean(0))
    np.testing.assert_allclose(stats.proprio_std, proprio.std(0))
    assert stats.num_steps == 80
    assert all(lo < hi for lo, hi in zip(stats.action_q01, stats.action_q99))


def test_compute_on_hand_worked_actions(make_episode):
    # 101 evenly spaced values 0..100 in dim 0: q01 = 1, q99 = 99
    actions = np.zeros((101, 4), np.float32)
    actions[:, 0] = np.arange(101)
    stats = DatasetStats.compute([make_episode(T=101, actions=actions, proprio=np.ones((101, 4), np.float32))])
    assert stats.action_q01[0] == pytest.approx(1.0)
    assert stats.action_q99[0] == pytest.approx(99.0)
    assert stats.proprio_mean == [1.0] * 4
    assert stats.proprio_std == [1e-6] * 4  # constant proprio: std floored, no division by zero later


def test_fixture_stats_match_its_episodes(tiny_dataset, tiny_stats, tiny_episodes):
    assert tiny_stats == DatasetStats.compute(tiny_episodes)
    assert tiny_stats.num_steps == 40


def test_compute_empty():
    with pytest.raises(DatasetError):
        DatasetStats.compute([])


def test_save_load_round_trip(tmp_path, make_episode):
    stats = DatasetStats.compute([make_episode(T=20)])
    path = stats.save(tmp_path)
    assert path == tmp_path / "stats.json"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left
    assert DatasetStats.load(tmp_path) == stats
    assert json.loads(path.read_text()) == asdict(stats)


def test_missing_stats_mentions_apo_stats(tmp_path):
    with pytest.raises(DatasetError, match="apo stats"):
        DatasetStats.load(tmp_path)


@pytest.mark.parametrize(
    "content",
    ["{not json", "[1, 2, 3]", json.dumps({"action_q01": [0.0]})],
    ids=["garbage", "list", "missing-keys"],
)
def test_corrupt_stats(tmp_path, content):
    (tmp_path / "stats.json").write_text(content)
    with pytest.raises(DatasetError, match="apo stats"):
        DatasetStats.load(tmp_path)


def test_inconsistent_or_nonfinite_stats(tmp_path):
    good = dict(action_q01=[0.0, 0.0], action_q99=[1.0, 1.0], proprio_mean=[0.0], proprio_std=[1.0], num_steps=3)
    (tmp_path / "stats.json").write_text(json.dumps({**good, "action_q99": [1.0]}))
    with pytest.raises(DatasetError, match="inconsistent"):
        DatasetStats.load(tmp_path)
    (tmp_path / "stats.json").write_text(json.dumps({**good, "proprio_std": [float("nan")]}))
    with pytest.raises(DatasetError, match="NaN"):
        DatasetStats.load(tmp_path)


def test_stats_of_reloaded_dataset(tmp_path, tiny_dataset, tiny_stats):
    # the loaded episodes reproduce the saved statistics exactly
    assert DatasetStats.compute(load_episodes(tiny_dataset)) == tiny_stats
