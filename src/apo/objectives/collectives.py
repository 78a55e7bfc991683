"""The few collective operations the losses need when training runs on several processes.

Every process holds a shard of the global batch (``apo.data.sampler.shard``: positions
``rank, rank + W, ...``). Quantities that the single-process losses compute over the whole batch
(the KL estimate z0, the batch-normalized adaptive weights, weight normalizers) are all-reduced so
that every process uses the global value. Without an initialized ``torch.distributed`` process group
every function here is the identity (rank 0 of 1).

Every process must call these functions the same number of times in the same order (they are
collective); the losses call them unconditionally, also when their local shard is empty.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed(distributed: bool | None = None) -> bool:
    """``distributed`` if given, else whether a process group is initialized."""
    if distributed is None:
        return dist.is_available() and dist.is_initialized()
    return distributed


def world(distributed: bool | None = None) -> tuple[int, int]:
    """(rank, world_size); (0, 1) without a process group."""
    if is_distributed(distributed):
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(x: torch.Tensor, distributed: bool | None = None) -> torch.Tensor:
    """Sum of a detached copy of ``x`` over the processes (``x`` itself is left unchanged)."""
    out = x.detach().clone()
    if is_distributed(distributed):
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def global_mean(x: torch.Tensor, distributed: bool | None = None) -> torch.Tensor:
    """Mean of a detached ``x`` over the processes: a local normalizer ``n_r`` becomes ``mean_r n_r``, so
    that ``sum_local / global_mean(n_local)`` averaged over processes is ``sum_all / n_all``."""
    return all_reduce_sum(x, distributed) / world(distributed)[1]
