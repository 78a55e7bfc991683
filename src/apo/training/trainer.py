"""A readable training loop shared by every objective (cleanrl-style: one function, no magic).

``train(policy, data, objective, config)``: samples batches, augments images, calls the
objective, steps AdamW with warmup + cosine decay, logs metrics to ``metrics.jsonl`` and a
progress bar, writes an atomic checkpoint every ``checkpoint_every`` steps and resumes from it
when run again with the same output folder, and saves the final policy to ``<out>/policy``.
On several processes (torchrun) it trains on shards of the same global batch with averaged
gradients; see ``apo.training.distributed``.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from apo.data.dataset import StepData
from apo.data.sampler import UniformSampler
from apo.training import distributed
from apo.training.augment import random_shift
from apo.training.checkpoint import load_checkpoint, save_checkpoint


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 6000
    """Optimizer steps."""
    batch_size: int = 64
    """Samples per step."""
    lr: float = 3e-4
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 200
    """Linear warmup steps before cosine decay to 10% of lr."""
    grad_clip: float = 1.0
    """Gradient norm clip."""
    shift_pad: int = 4
    """Random-shift augmentation in pixels (0 disables)."""
    log_every: int = 50
    """Steps between metric lines in metrics.jsonl."""
    checkpoint_every: int = 500
    """Steps between checkpoints (resume point after a kill)."""
    seed: int = 0
    """Seed of sampling, augmentation and initialization."""
    threads: int = 2
    """torch CPU threads."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0 or self.shift_pad < 0:
            raise ValueError("warmup_steps and shift_pad must be >= 0")


# settings that may change between a run and its resumption (they do not change the result)
_RESUME_FREE = ("threads", "log_every", "checkpoint_every")


def _resume_key(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in _RESUME_FREE}


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train(
    policy,
    data: StepData,
    objective,
    cfg: TrainConfig,
    out_dir: str | Path,
    sampler=None,
    params: list[torch.nn.Parameter] | None = None,
    prepare: Callable[[dict], dict] | None = None,
    desc: str = "train",
) -> dict[str, Any]:
    """Train ``policy`` in place; returns the last logged metrics. ``params`` defaults to every
    trainable parameter (pass the LoRA parameters to train only those); ``prepare`` adds fields
    to each (augmented) batch, e.g. reference log-probs.

    With a torch.distributed process group (``apo.training.distributed``), ``cfg.batch_size`` is the
    global batch: every process draws it from ``sampler`` (which must draw global batches), keeps its
    shard, and the gradients are averaged; only rank 0 writes files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank, world_size = distributed.world()
    main = rank == 0
    if world_size > 1:
        if cfg.batch_size % world_size:
            raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {world_size} processes")
        if getattr(sampler, "world_size", 1) != 1:
            raise ValueError("with several processes pass a sampler that draws the global batch (world_size=1); "
                             "the trainer shards every batch itself")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    sampler = sampler or UniformSampler(len(data), cfg.batch_size, seed=cfg.seed)
    params = params if params is not None else [p for p in policy.parameters() if p.requires_grad]
    distributed.broadcast_parameters(policy)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1)
    lang_table = policy.embed_instructions(data.instructions)

    ckpt_path = out / "checkpoint.pt"
    start = 0
    ckpt = load_checkpoint(ckpt_path)
    if ckpt is not None:
        if _resume_key(ckpt["config"]) != _resume_key(asdict(cfg)):
            raise RuntimeError(
                f"{ckpt_path} was written with a different training config; use a new --out folder or delete it"
            )
        policy.load_state_dict(ckpt["policy"])
        opt.load_state_dict(ckpt["optimizer"])
        sampler.load_state_dict(ckpt["sampler"])
        aug_gen.set_state(ckpt["aug_gen"])
        torch.set_rng_state(ckpt["torch_rng"])
        start = ckpt["step"]
    distributed.barrier()  # every process has read the checkpoint before rank 0 may overwrite it
    if main:
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))

    def checkpoint(step: int) -> None:
        if main:
            save_checkpoint(ckpt_path, {
                "step": step, "config": asdict(cfg), "policy": policy.state_dict(), "optimizer": opt.state_dict(),
                "sampler": sampler.state_dict(), "aug_gen": aug_gen.get_state(), "torch_rng": torch.get_rng_state(),
            })

    policy.train()
    last: dict[str, Any] = {}
    running: dict[str, float] = {}
    n_run = 0
    t0 = time.time()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=desc, unit="step", dynamic_ncols=True,
               disable=not main)
    with open(out / "metrics.jsonl", "a") if main else contextlib.nullcontext() as log:
        for step in bar:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)
            batch = data.batch(sampler.sample(), lang_table)
            batch["image"] = random_shift(batch["image"], cfg.shift_pad, aug_gen)
            if world_size > 1:
                batch = distributed.shard_batch(batch, rank, world_size)
            if prepare is not None:
                batch = prepare(batch)
            loss, metrics = objective(policy, batch)
            if not distributed.all_finite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower --lr or check the data")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            distributed.sync_gradients(params)
            gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            metrics["grad_norm"] = float(gnorm)
            for k, v in metrics.items():
                running[k] = running.get(k, 0.0) + float(v)
            n_run += 1
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                last = distributed.average_metrics({k: v / n_run for k, v in running.items()})
                last.update(step=step + 1, lr=lr_at(step, cfg), elapsed_s=round(time.time() - t0, 1))
                if main:
                    log.write(json.dumps(last) + "\n")
                    log.flush()
                bar.set_postfix({k: f"{last[k]:.3g}" for k in ("loss", "token_acc", "l1") if k in last})
                running, n_run = {}, 0
            if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                checkpoint(step + 1)
    bar.close()
    checkpoint(cfg.steps)
    distributed.barrier()  # the final checkpoint is on disk before any process goes on
    policy.eval()
    return last
