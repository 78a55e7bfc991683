"""Episode storage: a dataset is a folder of HDF5 episode files plus ``stats.json``.

Each episode is one file ``episodes/demo_<N>.hdf5`` holding the robomimic-like layout
``data/demo_<N>/{obs/image, obs/proprio, actions, rewards, dones, labels[, policy_actions]}``
with the instruction, task, seed, success and source as attributes of ``data/demo_<N>``.
A file is written under a temporary name, flushed to disk and then atomically renamed, so a
process killed mid-collection loses at most the episode it was writing; every earlier
episode stays readable. See docs/dataset.md.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from apo.data.episode import Episode

_EP_RE = re.compile(r"^demo_(\d+)\.hdf5$")
FORMAT_VERSION = 1


class DatasetError(RuntimeError):
    """A dataset folder or file is missing, corrupt or inconsistent; the message says how to fix it."""


def _episode_files(root: Path) -> list[tuple[int, Path]]:
    ep_dir = root / "episodes"
    if not ep_dir.is_dir():
        return []
    out = []
    for p in ep_dir.iterdir():
        m = _EP_RE.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


class EpisodeWriter:
    """Appends episodes to a dataset folder, one atomic file each."""

    def __init__(self, root: str | os.PathLike, compression: str | None = "lzf"):
        self.root = Path(root)
        (self.root / "episodes").mkdir(parents=True, exist_ok=True)
        # leftovers of a killed writer: never valid, remove them
        for tmp in (self.root / "episodes").glob("*.tmp"):
            tmp.unlink()
        existing = _episode_files(self.root)
        self._next = existing[-1][0] + 1 if existing else 0
        self.compression = compression
        meta = self.root / "meta.json"
        if not meta.exists():
            meta.write_text(json.dumps({"format": "apo-episodes", "version": FORMAT_VERSION}, indent=2))

    @property
    def num_episodes(self) -> int:
        return self._next

    def write(self, ep: Episode) -> Path:
        ep.validate()
        idx = self._next
        final = self.root / "episodes" / f"demo_{idx:06d}.hdf5"
        tmp = final.with_suffix(".hdf5.tmp")
        with h5py.File(tmp, "w") as f:
            g = f.create_group(f"data/demo_{idx}")
            obs = g.create_group("obs")
            obs.create_dataset("image", data=ep.images, compression=self.compression, chunks=(1, *ep.images.shape[1:]))
            obs.create_dataset("proprio", data=ep.proprio.astype(np.float32))
            g.create_dataset("actions", data=ep.actions.astype(np.float32))
            g.create_dataset("rewards", data=ep.rewards.astype(np.float32))
            g.create_dataset("dones", data=ep.dones.astype(bool))
            g.create_dataset("labels", data=ep.labels.astype(np.int8))
            if ep.policy_actions is not None:
                g.create_dataset("policy_actions", data=ep.policy_actions.astype(np.float32))
            g.attrs.update(
                task=ep.task, instruction=ep.instruction, seed=int(ep.seed), success=bool(ep.success),
                source=ep.source, num_samples=len(ep), extras=json.dumps(ep.extras),
            )
            f.flush()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        self._next += 1
        return final


def read_episode(path: str | os.PathLike) -> Episode:
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            (name,) = list(f["data"].keys())
            g = f["data"][name]
            a = g.attrs
            return Episode(
                task=str(a["task"]), instruction=str(a["instruction"]),
                images=g["obs/image"][()], proprio=g["obs/proprio"][()], actions=g["actions"][()],
                rewards=g["rewards"][()], dones=g["dones"][()], labels=g["labels"][()],
                success=bool(a["success"]), seed=int(a["seed"]), source=str(a["source"]),
                policy_actions=g["policy_actions"][()] if "policy_actions" in g else None,
                extras=json.loads(a.get("extras", "{}")),
            )
    except (OSError, KeyError, ValueError) as e:
        raise DatasetError(
            f"cannot read episode file {path}: {e}. The file is corrupt or not an apo episode; "
            f"delete it (the other episodes are independent) or re-collect it."
        ) from e


def iter_episodes(root: str | os.PathLike) -> Iterator[Episode]:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist; collect data first (apo collect-demos --out {root})")
    files = _episode_files(root)
    if not files:
        raise DatasetError(f"dataset folder {root} holds no episodes (expected {root}/episodes/demo_N.hdf5)")
    for _, p in files:
        yield read_episode(p)


def load_episodes(*roots: str | os.PathLike) -> list[Episode]:
    return [ep for root in roots for ep in iter_episodes(root)]
