"""HDF5 episode storage: round trip, atomic writes under SIGKILL, corrupt/missing data."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from apo.data import DatasetError, EpisodeWriter, iter_episodes, load_episodes, read_episode

ARRAYS = ("images", "proprio", "actions", "rewards", "dones", "labels")


def assert_same_episode(a, b):
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        np.testing.assert_array_equal(x, y, err_msg=name)
    for name in ("task", "instruction", "success", "seed", "source", "extras"):
        assert getattr(a, name) == getattr(b, name), name
    if a.policy_actions is None:
        assert b.policy_actions is None
    else:
        np.testing.assert_array_equal(a.policy_actions, b.policy_actions)


def test_round_trip(tmp_path, make_episode):
    ep = make_episode(
        T=6, seed=123, source="interaction", success=False,
        labels=np.array([1, 1, 0, 2, 2, 1], np.int8),
        policy_actions=np.random.default_rng(1).uniform(-1, 1, (6, 4)).astype(np.float32),
        extras={"person": "simulated", "note": "ünïcode"},
    )
    writer = EpisodeWriter(tmp_path)
    path = writer.write(ep)
    assert path == tmp_path / "episodes" / "demo_000000.hdf5"
    back = read_episode(path)
    assert_same_episode(ep, back)
    assert back.images.dtype == np.uint8
    assert back.proprio.dtype == np.float32 and back.actions.dtype == np.float32
    assert back.rewards.dtype == np.float32
    assert back.dones.dtype == bool and back.labels.dtype == np.int8
    assert isinstance(back.success, bool) and isinstance(back.seed, int)

    # robomimic-like layout with attributes on data/demo_<N>
    with h5py.File(path, "r") as f:
        g = f["data/demo_0"]
        assert set(g.keys()) == {"obs", "actions", "rewards", "dones", "labels", "policy_actions"}
        assert set(g["obs"].keys()) == {"image", "proprio"}
        assert g.attrs["task"] == "synthetic-task"
        assert g.attrs["instruction"] == "do the thing"
        assert g.attrs["num_samples"] == 6
        assert int(g.attrs["seed"]) == 123
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["format"] == "apo-episodes"


def test_round_trip_without_policy_actions_and_uncompressed(tmp_path, make_episode):
    ep = make_episode(T=3)
    back = read_episode(EpisodeWriter(tmp_path, compression=None).write(ep))
    assert back.policy_actions is None
    assert_same_episode(ep, back)


def test_indices_increase_and_continue_across_writers(tmp_path, make_episode):
    w = EpisodeWriter(tmp_path)
    assert w.num_episodes == 0
    eps = [make_episode(T=2 + i, seed=i) for i in range(3)]
    paths = [w.write(e) for e in eps[:2]]
    assert [p.name for p in paths] == ["demo_000000.hdf5", "demo_000001.hdf5"]
    w2 = EpisodeWriter(tmp_path)
    assert w2.num_episodes == 2
    assert w2.write(eps[2]).name == "demo_000002.hdf5"
    loaded = load_episodes(tmp_path)
    assert [e.seed for e in loaded] == [0, 1, 2]
    for a, b in zip(eps, loaded):
        assert_same_episode(a, b)


def test_files_are_read_in_numeric_order(tmp_path, make_episode):
    w = EpisodeWriter(tmp_path)
    for i in range(3):
        w.write(make_episode(T=2, seed=i))
    # a gap and a large index: order is numeric, and the next index follows the largest
    os.replace(tmp_path / "episodes" / "demo_000002.hdf5", tmp_path / "episodes" / "demo_000010.hdf5")
    assert [e.seed for e in iter_episodes(tmp_path)] == [0, 1, 2]
    assert EpisodeWriter(tmp_path).num_episodes == 11


def test_load_episodes_from_several_roots(tmp_path, make_episode):
    EpisodeWriter(tmp_path / "a").write(make_episode(seed=1))
    EpisodeWriter(tmp_path / "b").write(make_episode(seed=2))
    assert [e.seed for e in load_episodes(tmp_path / "a", tmp_path / "b")] == [1, 2]


def test_write_validates_and_leaves_nothing_behind(tmp_path, make_episode):
    w = EpisodeWriter(tmp_path)
    ep = make_episode(T=4)
    ep.labels = np.full(4, 7, np.int8)  # corrupted after construction
    with pytest.raises(ValueError, match="labels"):
        w.write(ep)
    assert list((tmp_path / "episodes").iterdir()) == []
    assert w.num_episodes == 0


def test_tiny_dataset_fixture(tiny_episodes, instruction, task):
    """The shared fixture: 2 real expert episodes, truncated at 20 steps."""
    assert len(tiny_episodes) == 2
    assert [e.seed for e in tiny_episodes] == [1, 2]
    for e in tiny_episodes:
        assert len(e) == 20
        assert e.task == task and e.instruction == instruction
        assert e.images.shape == (20, 64, 64, 3)
        assert e.source == "expert" and (e.labels == 2).all()
        assert e.dones[-1] and not e.dones[:-1].any()
        assert np.abs(e.actions).max() <= 1.0
    assert not np.array_equal(tiny_episodes[0].images[0], tiny_episodes[1].images[0])


_WRITER_LOOP = textwrap.dedent(
    """
    import sys
    import numpy as np
    from apo.data import Episode, EpisodeWriter

    T = 150
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (T, 64, 64, 3), dtype=np.uint8)  # incompressible: slow-ish writes
    actions = rng.uniform(-1, 1, (T, 4)).astype(np.float32)
    writer = EpisodeWriter(sys.argv[1], compression=None)
    i = writer.num_episodes
    while True:
        writer.write(Episode(
            task="kill-test", instruction="survive", images=images, proprio=np.zeros((T, 4), np.float32),
            actions=actions, rewards=np.zeros(T, np.float32), dones=np.arange(T) == T - 1,
            labels=np.full(T, 2, np.int8), success=True, seed=i,
        ))
        i += 1
    """
)


@pytest.mark.slow
def test_sigkill_during_collection_leaves_a_readable_dataset(tmp_path, make_episode):
    root = tmp_path / "ds"
    ep_dir = root / "episodes"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER_LOOP, str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if ep_dir.is_dir() and len(list(ep_dir.glob("demo_*.hdf5"))) >= 3:
                break
            if proc.poll() is not None:
                pytest.fail(f"writer exited early: {proc.stderr.read().decode()}")
            time.sleep(0.002)
        else:
            pytest.fail("writer did not produce 3 episodes in 60 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    finals = sorted(ep_dir.glob("demo_*.hdf5"))
    n = len(finals)
    assert n >= 3
    assert [p.name for p in finals] == [f"demo_{i:06d}.hdf5" for i in range(n)]
    expected_images = np.random.default_rng(0).integers(0, 256, (150, 64, 64, 3), dtype=np.uint8)
    for i, p in enumerate(finals):  # every completed file reads fine and is complete
        ep = read_episode(p)
        assert ep.seed == i and len(ep) == 150
        np.testing.assert_array_equal(ep.images, expected_images)

    # simulate the half-written file of a kill mid-write (whether or not the kill left one)
    partial = ep_dir / f"demo_{n:06d}.hdf5.tmp"
    partial.write_bytes(finals[0].read_bytes()[:5000])
    assert len(load_episodes(root)) == n  # readers ignore *.tmp

    writer = EpisodeWriter(root)  # a new writer removes leftovers
    assert list(ep_dir.glob("*.tmp")) == []
    assert writer.num_episodes == n
    path = writer.write(make_episode(T=3, seed=999))
    assert path.name == f"demo_{n:06d}.hdf5"
    eps = load_episodes(root)
    assert len(eps) == n + 1 and eps[-1].seed == 999


def test_corrupt_file_raises_dataset_error_naming_it(tmp_path, make_episode):
    w = EpisodeWriter(tmp_path)
    w.write(make_episode(seed=0))
    bad = tmp_path / "episodes" / "demo_000001.hdf5"
    bad.write_bytes(os.urandom(2048))
    with pytest.raises(DatasetError, match="demo_000001.hdf5"):
        read_episode(bad)
    with pytest.raises(DatasetError, match="demo_000001.hdf5"):
        load_episodes(tmp_path)


def test_hdf5_that_is_not_an_episode_raises_dataset_error(tmp_path):
    path = tmp_path / "demo_000000.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("something", data=np.zeros(3))
    with pytest.raises(DatasetError, match="demo_000000.hdf5"):
        read_episode(path)


def test_truncated_file_raises_dataset_error(tmp_path, make_episode):
    path = EpisodeWriter(tmp_path).write(make_episode(T=4))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=path.name):
        read_episode(path)


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_episodes(tmp_path / "nope")


def test_empty_folder(tmp_path):
    with pytest.raises(DatasetError, match="no episodes"):
        load_episodes(tmp_path)
    (tmp_path / "episodes").mkdir()
    (tmp_path / "episodes" / "notes.txt").write_text("not an episode")
    with pytest.raises(DatasetError, match="no episodes"):
        load_episodes(tmp_path)


def test_copy_of_fixture_dataset_reads_identically(tmp_path, tiny_dataset, tiny_episodes):
    shutil.copytree(tiny_dataset, tmp_path / "copy")
    for a, b in zip(tiny_episodes, load_episodes(tmp_path / "copy")):
        assert_same_episode(a, b)
