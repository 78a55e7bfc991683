"""Balanced sampling for refinement: fixed shares of desirable, correction and undesirable steps.

Buckets: desirable = expert demonstrations + autonomous policy steps; correction = the person's
actions in interaction episodes; undesirable = the K policy steps before each takeover. Each
batch takes ``round(share * batch_size)`` steps from every bucket (the paper: 50/25/25). Within a
bucket steps are drawn without replacement from a fresh permutation, so one *epoch* is the number
of batches after which the scarcest bucket (relative to its share) has been seen once.
An empty bucket's share goes to the desirable bucket (e.g. a round without takeovers).
With distributed training each process draws the same global batch and keeps every
``world_size``-th step of it (so every process sees all buckets).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from apo.data.dataset import AUTONOMOUS, CORRECTION, EXPERT, UNDESIRABLE
from apo.data.sampler import shard


@dataclass(frozen=True)
class BucketShares:
    desirable: float = 0.5
    """Share of expert + autonomous policy steps per batch."""
    correction: float = 0.25
    """Share of the person's corrections per batch."""
    undesirable: float = 0.25
    """Share of pre-takeover policy steps per batch."""

    def __post_init__(self) -> None:
        vals = (self.desirable, self.correction, self.undesirable)
        if min(vals) < 0 or abs(sum(vals) - 1) > 1e-6:
            raise ValueError(f"bucket shares must be >= 0 and sum to 1, got {vals}")


class BalancedSampler:
    def __init__(self, categories: torch.Tensor, batch_size: int, shares: BucketShares = BucketShares(),
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must be divisible by world_size {world_size}")
        cats = categories.long()
        self.buckets = {
            "desirable": torch.nonzero((cats == EXPERT) | (cats == AUTONOMOUS)).flatten(),
            "correction": torch.nonzero(cats == CORRECTION).flatten(),
            "undesirable": torch.nonzero(cats == UNDESIRABLE).flatten(),
        }
        if len(self.buckets["desirable"]) == 0:
            raise ValueError("no desirable steps (expert demos or autonomous policy steps) to sample from")
        counts = {"correction": round(shares.correction * batch_size), "undesirable": round(shares.undesirable * batch_size)}
        for name in ("correction", "undesirable"):
            if len(self.buckets[name]) == 0 and counts[name]:
                warnings.warn(f"no {name} steps in the data: their share of each batch goes to desirable steps")
                counts[name] = 0
        counts["desirable"] = batch_size - counts["correction"] - counts["undesirable"]
        self.counts = counts
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.gen = torch.Generator().manual_seed(seed)
        self._perm = {k: torch.empty(0, dtype=torch.long) for k in self.buckets}
        self._pos = {k: 0 for k in self.buckets}

    @property
    def steps_per_epoch(self) -> int:
        return max(math.ceil(len(self.buckets[k]) / n) for k, n in self.counts.items() if n > 0)

    def _draw(self, name: str, n: int) -> torch.Tensor:
        out = []
        while n > 0:
            if self._pos[name] >= len(self._perm[name]):
                self._perm[name] = self.buckets[name][torch.randperm(len(self.buckets[name]), generator=self.gen)]
                self._pos[name] = 0
            take = min(n, len(self._perm[name]) - self._pos[name])
            out.append(self._perm[name][self._pos[name] : self._pos[name] + take])
            self._pos[name] += take
            n -= take
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long)

    def sample_global(self) -> torch.Tensor:
        return torch.cat([self._draw(k, n) for k, n in self.counts.items() if n > 0])

    def sample(self) -> torch.Tensor:
        """This process's slice of the global batch (every process draws the same global batch)."""
        return shard(self.sample_global(), self.rank, self.world_size)

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "perm": dict(self._perm), "pos": dict(self._pos)}

    def load_state_dict(self, d: dict) -> None:
        self.gen.set_state(d["gen"])
        self._perm, self._pos = dict(d["perm"]), dict(d["pos"])
