"""Normalization statistics computed from a dataset and saved beside it (``stats.json``).

Actions: 1st and 99th percentile per dimension (OpenVLA's q01/q99 normalization).
Proprio: mean and standard deviation per dimension.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from apo.data.episode import Episode
from apo.data.storage import DatasetError


@dataclass
class DatasetStats:
    action_q01: list[float]
    action_q99: list[float]
    proprio_mean: list[float]
    proprio_std: list[float]
    num_steps: int

    def __post_init__(self) -> None:
        lens = {len(self.action_q01), len(self.action_q99)}
        if len(lens) != 1 or len(self.proprio_mean) != len(self.proprio_std):
            raise DatasetError("stats.json is inconsistent: q01/q99 or mean/std lengths differ; recompute with `apo stats`")
        if any(not np.isfinite(v) for v in [*self.action_q01, *self.action_q99, *self.proprio_mean, *self.proprio_std]):
            raise DatasetError("stats.json contains NaN/inf; recompute with `apo stats`")

    @classmethod
    def compute(cls, episodes: list[Episode]) -> "DatasetStats":
        if not episodes:
            raise DatasetError("cannot compute statistics of an empty dataset")
        actions = np.concatenate([e.actions for e in episodes]).astype(np.float64)
        proprio = np.concatenate([e.proprio for e in episodes]).astype(np.float64)
        return cls(
            action_q01=np.quantile(actions, 0.01, axis=0).tolist(),
            action_q99=np.quantile(actions, 0.99, axis=0).tolist(),
            proprio_mean=proprio.mean(0).tolist(),
            proprio_std=np.maximum(proprio.std(0), 1e-6).tolist(),
            num_steps=int(actions.shape[0]),
        )

    def save(self, root: str | os.PathLike) -> Path:
        path = Path(root) / "stats.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, root: str | os.PathLike) -> "DatasetStats":
        path = Path(root) / "stats.json"
        if not path.exists():
            raise DatasetError(
                f"{path} is missing: normalization statistics are computed when a dataset is collected; "
                f"recompute them with `apo stats --data {root}`"
            )
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as e:
            raise DatasetError(f"{path} is corrupt ({e}); recompute it with `apo stats --data {root}`") from e
