"""Shared pieces of the experiment runners: settings, the run folder's config check, the log, videos."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apo.data import EpisodeWriter
from apo.data.episode import LABEL_HUMAN as H, LABEL_POLICY as P, LABEL_UNDESIRABLE as U
from apo.evaluation.protocol import (
    RunConfigMismatchError, RunLog, all_tasks, check_and_save_config, evaluation_settings, setting_success,
    write_interaction_videos,
)


def test_evaluation_settings():
    assert evaluation_settings(("a-v3", "b-v3"), None) == {"original": ("a-v3", "b-v3")}
    s = evaluation_settings(("a-v3", "b-v3"), "texture+lighting")
    assert list(s) == ["perturbed", "original"]  # deployed in the first one
    assert s["perturbed"] == ("a-v3+texture+lighting", "b-v3+texture+lighting")
    assert all_tasks(s) == ("a-v3+texture+lighting", "b-v3+texture+lighting", "a-v3", "b-v3")
    results = {"a-v3": {"success_rate": 1.0}, "b-v3": {"success_rate": 0.5},
               "a-v3+texture+lighting": {"success_rate": 0.0}, "b-v3+texture+lighting": {"success_rate": 0.5}}
    assert setting_success(results, s) == {"perturbed": 0.25, "original": 0.75}


def test_config_check_allows_only_the_listed_changes(tmp_path):
    cfg = {"tasks": ["a"], "objectives": ["apo"], "refine": {"beta": 0.1, "train": {"steps": 10, "threads": 2}}}
    may = ("objectives", "refine.train.threads")
    check_and_save_config(tmp_path, cfg, may)
    check_and_save_config(tmp_path, cfg, may)  # the same settings: continue
    changed = {**cfg, "objectives": ["apo", "kto"], "refine": {"beta": 0.1, "train": {"steps": 10, "threads": 1}}}
    check_and_save_config(tmp_path, changed, may)  # only listed settings changed
    assert json.loads((tmp_path / "config.json").read_text())["objectives"] == ["apo", "kto"]
    other = {**changed, "refine": {"beta": 0.2, "train": {"steps": 10, "threads": 1}}}
    with pytest.raises(RunConfigMismatchError, match=r"refine\.beta: 0\.1 -> 0\.2") as e:
        check_and_save_config(tmp_path, other, may)
    assert "--out" in str(e.value)
    assert json.loads((tmp_path / "config.json").read_text())["refine"]["beta"] == 0.1  # untouched
    (tmp_path / "config.json").write_text('{"tasks": [')  # cut short by a kill: rewritten
    check_and_save_config(tmp_path, other, may)
    assert json.loads((tmp_path / "config.json").read_text())["refine"]["beta"] == 0.2


def test_run_log_appends_timestamped_lines(tmp_path):
    log = RunLog(tmp_path / "run" / "log.txt")
    log.stage("first stage")
    log.info("a detail")
    lines = (tmp_path / "run" / "log.txt").read_text().splitlines()
    assert len(lines) == 2 and lines[0].endswith("  first stage") and lines[1].endswith("    a detail")
    assert lines[0][:4].isdigit()


def test_interaction_videos_prefer_episodes_with_takeovers(tmp_path, make_episode):
    writer = EpisodeWriter(tmp_path / "inter")
    no_takeover = np.array([P] * 6, np.int8)
    takeover = np.array([P, U, H, H, P, P], np.int8)
    for seed, task, labels, success in [
        (1, "a", no_takeover, True), (2, "a", takeover, True), (3, "a", takeover, True),
        (4, "a", no_takeover, False), (5, "b", takeover, False),
    ]:
        writer.write(make_episode(T=6, seed=seed, task=task, labels=labels, success=success, source="interaction"))
    out = tmp_path / "videos"
    paths = write_interaction_videos(tmp_path / "inter", out, per_outcome=1)
    assert sorted(p.name for p in paths) == [
        "a_seed2_success_1takeovers.mp4", "a_seed4_failure_0takeovers.mp4", "b_seed5_failure_1takeovers.mp4",
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # no leftover temp file
    mtime = paths[0].stat().st_mtime_ns
    assert write_interaction_videos(tmp_path / "inter", out, per_outcome=1) == paths
    assert paths[0].stat().st_mtime_ns == mtime  # kept, not rewritten
    assert len(write_interaction_videos(tmp_path / "inter", tmp_path / "v2", per_outcome=2)) == 4
    assert write_interaction_videos(tmp_path / "inter", tmp_path / "v3", per_outcome=0) == []
