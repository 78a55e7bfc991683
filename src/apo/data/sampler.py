"""Samplers yield index batches into StepData."""

from __future__ import annotations

import torch


def shard(x, rank: int, world_size: int):
    """This process's part of a global batch: positions rank, rank + world_size, ... (every process
    gets the same share of each bucket of a balanced batch)."""
    return x[rank::world_size]


def shard_positions(n_local: int, rank: int, world_size: int) -> torch.Tensor:
    """Positions in the global batch of the ``n_local`` elements of ``shard(batch, rank, world_size)``."""
    return torch.arange(n_local) * world_size + rank


class UniformSampler:
    """Uniform sampling with replacement over a subset of steps (default: all)."""

    def __init__(self, num_steps: int, batch_size: int, seed: int = 0, subset: torch.Tensor | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.pool = torch.arange(num_steps) if subset is None else subset
        if len(self.pool) == 0:
            raise ValueError("cannot sample from an empty set of steps")
        self.batch_size = batch_size
        self.gen = torch.Generator().manual_seed(seed)

    def sample(self) -> torch.Tensor:
        return self.pool[torch.randint(len(self.pool), (self.batch_size,), generator=self.gen)]

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, d: dict) -> None:
        self.gen.set_state(d["gen"])
