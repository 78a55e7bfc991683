"""Uniform-bin action tokenizer (OpenVLA style), with action chunks.

Contract
--------
* Input: float actions of shape ``(..., H, D)`` (``H = horizon`` actions of ``D = action_dim``
  dimensions; the chunk axis is always present, also for ``H == 1``). Output of ``encode``:
  int64 tokens ``(..., H * D)``, action-major (``[a0_x, a0_y, a0_z, a0_g, a1_x, ...]``), each in ``[0, n_bins)``.
* Normalization: every dimension except the gripper is mapped affinely from
  ``[q01, q99]`` (dataset statistics) to ``[-1, 1]``; the gripper dimension (``gripper_dim``)
  is kept in its native range ``[-1, 1]`` (MetaWorld's action box), as its own dimension.
  Values outside the range are clipped first.
* Binning: ``[-1, 1]`` is cut into ``n_bins`` equal bins; a value maps to the index of its bin.
  ``decode`` returns bin centres, un-normalized.
* Error bound: for a value inside its range, ``|decode(encode(a)) - a| <= (hi - lo) / (2 n_bins)``
  per dimension (half a bin, in raw units); outside it, the error is that plus the clipping.
* Vocabulary: ``n_bins`` tokens; the model adds its own BOS token after them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from apo.tokenizers.base import TOKENIZERS, ActionTokenizer, action_ranges, check_actions


@TOKENIZERS.register("bin")
class BinActionTokenizer(ActionTokenizer):
    kind = "bin"

    def __init__(
        self,
        q01: list[float] | np.ndarray,
        q99: list[float] | np.ndarray,
        n_bins: int = 256,
        horizon: int = 1,
        gripper_dim: int | None = 3,
        min_range: float = 1e-4,
    ):
        if n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {n_bins}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.q01, self.q99, self.lo, self.hi = action_ranges(q01, q99, gripper_dim, min_range)
        self.action_dim = int(self.q01.size)
        self.n_bins = int(n_bins)
        self.horizon = int(horizon)
        self.gripper_dim = gripper_dim
        self.min_range = float(min_range)

    @property
    def vocab_size(self) -> int:
        return self.n_bins

    @property
    def num_tokens(self) -> int:
        return self.horizon * self.action_dim

    def max_error(self) -> np.ndarray:
        """Per-dimension round-trip error bound (half a bin) for in-range values."""
        return (self.hi - self.lo) / (2 * self.n_bins)

    def _check_actions(self, actions: np.ndarray) -> np.ndarray:
        return check_actions(actions, self.horizon, self.action_dim)

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        x = 2 * (np.asarray(actions, np.float64) - self.lo) / (self.hi - self.lo) - 1
        return np.clip(x, -1.0, 1.0)

    def unnormalize(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) + 1) / 2 * (self.hi - self.lo) + self.lo

    def encode(self, actions: np.ndarray) -> np.ndarray:
        x = self.normalize(self._check_actions(actions))
        bins = np.floor((x + 1) / 2 * self.n_bins).astype(np.int64)
        bins = np.clip(bins, 0, self.n_bins - 1)  # x == 1 falls in the last bin
        return bins.reshape(*bins.shape[:-2], self.num_tokens)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        tokens = np.asarray(tokens)
        if tokens.shape[-1:] != (self.num_tokens,):
            raise ValueError(f"tokens must have shape (..., {self.num_tokens}), got {tokens.shape}")
        if not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"tokens must be integers, got {tokens.dtype}")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.n_bins):
            raise ValueError(f"tokens must be in [0, {self.n_bins}), got range [{tokens.min()}, {tokens.max()}]")
        centres = (tokens.astype(np.float64) + 0.5) / self.n_bins * 2 - 1
        centres = centres.reshape(*tokens.shape[:-1], self.horizon, self.action_dim)
        return self.unnormalize(centres).astype(np.float32)

    def gripper_token_mask(self, tokens=None):
        mask = np.zeros((self.horizon, self.action_dim), bool)
        if self.gripper_dim is not None:
            mask[:, self.gripper_dim] = True
        mask = mask.reshape(-1)
        if tokens is None:
            return mask
        if isinstance(tokens, torch.Tensor):
            return torch.from_numpy(mask).to(tokens.device).expand(tokens.shape)
        return np.broadcast_to(mask, np.shape(tokens))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "q01": self.q01.tolist(), "q99": self.q99.tolist(), "n_bins": self.n_bins,
            "horizon": self.horizon, "gripper_dim": self.gripper_dim, "min_range": self.min_range,
        }

    @classmethod
    def from_recipe(cls, recipe, stats, chunks) -> "BinActionTokenizer":
        """Bins over the dataset's [q01, q99] (no fitting: ``chunks`` is not used)."""
        return cls(stats.action_q01, stats.action_q99, n_bins=recipe.n_bins, horizon=recipe.horizon)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BinActionTokenizer":
        return cls(q01=d["q01"], q99=d["q99"], n_bins=d["n_bins"], horizon=d["horizon"], gripper_dim=d["gripper_dim"],
                   min_range=d.get("min_range", 1e-4))
