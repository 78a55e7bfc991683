"""Training on several processes (torch.distributed, gloo on the CPU / nccl on GPUs).

Launch any training command with torchrun (one process per core or GPU)::

    torchrun --standalone --nproc_per_node 2 -m apo.cli.main refine --policy ... --out ...

``init_from_env`` (called by ``train_base_policy`` and ``refine``) joins the process group that
torchrun describes in the environment (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``);
without it everything runs in one process, unchanged. How a step is distributed (``train``):

* every process draws the same *global* batch from the sampler (same seed, same state), augments it
  with the same generator and keeps its shard (``apo.data.sampler.shard``: positions rank, rank + W, ...);
* the objective runs on the shard; what it needs over the whole batch (z0, batch-normalized adaptive
  weights, weight and pair normalizers) is all-reduced (``apo.objectives.collectives``), so the mean of
  the process losses is the single-process loss of the global batch;
* gradients are averaged over the processes (one all-reduce of all gradients, what DDP does; the
  objectives call the model's submodules directly, which a DDP wrapper would not see) before clipping
  and the optimizer step, so every process applies the identical update;
* only rank 0 writes checkpoints, metrics and the saved policy; logged metrics are averaged over
  processes.
"""

from __future__ import annotations

import math
import os
import socket
from typing import Any, Iterable

import torch
import torch.distributed as dist

from apo.data.sampler import shard
from apo.objectives.collectives import is_distributed, world

__all__ = [
    "all_finite", "average_metrics", "barrier", "broadcast_object", "broadcast_parameters", "free_port", "init_from_env",
    "is_distributed", "is_main", "shard_batch", "sync_gradients", "world",
]


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group described by torchrun's environment variables if ``WORLD_SIZE > 1``
    (no-op if already initialized or single-process). Returns whether training is distributed."""
    if is_distributed():
        return True
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={world_size} but {', '.join(missing)} not set; launch with torchrun "
                           "(e.g. torchrun --standalone --nproc_per_node 2 -m apo.cli.main ...)")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend=backend, rank=int(os.environ["RANK"]), world_size=world_size)
    return True


def is_main() -> bool:
    """Whether this process writes files (rank 0, or the only process)."""
    return world()[0] == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every process (identity without a process group)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and floating-point buffers to every process (all start from identical weights)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]:
            dist.broadcast(t.data, src=0)


def shard_batch(batch: dict[str, Any], rank: int, world_size: int) -> dict[str, Any]:
    """This process's shard of every per-sample field of a global batch."""
    return {k: shard(v, rank, world_size) if isinstance(v, torch.Tensor) and v.ndim else v for k, v in batch.items()}


def sync_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients over processes (missing gradients count as zero) in one all-reduce."""
    if not is_distributed():
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def all_finite(loss: torch.Tensor) -> bool:
    """Whether the loss is finite on every process (collective, so all processes stop together)."""
    bad = torch.tensor([0.0 if torch.isfinite(loss).all() else 1.0])
    if is_distributed():
        dist.all_reduce(bad, op=dist.ReduceOp.SUM)
    return bad.item() == 0


def average_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Every key's mean over the processes that have a finite value for it (NaN if none)."""
    if not is_distributed():
        return metrics
    gathered: list[dict[str, float]] = [{} for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, metrics)
    keys = list(dict.fromkeys(k for m in gathered for k in m))
    out = {}
    for k in keys:
        vals = [float(m[k]) for m in gathered if k in m and math.isfinite(float(m[k]))]
        out[k] = sum(vals) / len(vals) if vals else float("nan")
    return out


def free_port() -> int:
    """A free TCP port on localhost (for MASTER_PORT when starting processes by hand)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
