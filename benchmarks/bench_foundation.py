"""Foundation benchmark: environment, rendering, training and decoding throughput on the CPU.

Measures, with ``torch.set_num_threads(2)``:

1. env steps/s (``env.step`` including the render of the observation; also the scripted
   expert's ``act`` + ``env.step``) for every dev-suite task at 64 and 96 px, resetting on
   termination/truncation (resets are not timed);
2. rendering fps alone (``env.render()``);
3. train samples/s of the base model with the bin tokenizer (horizon 4, 256 bins, default
   VLAConfig, 64 px) at batch 64: BC loss forward + backward + grad clip + AdamW step on random
   data, and the cost of the ``random_shift`` augmentation per batch;
4. ``TinyVLA.generate`` latency with and without the KV cache, batch 1 and 10, horizon 1
   (4 tokens) and 4 (16 tokens).

Usage::

    python benchmarks/bench_foundation.py [--quick] [--out benchmarks/results/foundation.json]

``--quick`` is a smoke test with few iterations; the full run takes ~1 min on 2 idle cores. Run it on
an idle machine: the JSON records the load average at the start.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from rich.console import Console

from _common import (
    run_script,
    MODEL_IMAGE_SIZE, RESULTS_DIR, build_base_policy, per_second, print_machine,
    summarize, table, time_calls,
)
from apo.envs import DEV_SUITE, EnvConfig, MetaWorldEnv, ScriptedExpert, make_env
from apo.models import LANG_DIM, VLAPolicy
from apo.objectives import OBJECTIVES
from apo.training.augment import random_shift
from apo.training.base_policy import BaseRecipe
from apo.training.trainer import TrainConfig

THREADS = 2
ENV_IMAGE_SIZES = (64, 96)
TRAIN_BATCH = 64
DECODE_BATCHES = (1, 10)
DECODE_HORIZONS = (1, 4)
DEFAULT_OUT = RESULTS_DIR / "foundation.json"


@dataclass(frozen=True)
class Budget:
    """Iteration counts (timed iterations after ``warmup`` untimed ones)."""

    env_steps: int
    renders: int
    train_steps: int
    augment_calls: int
    decode_calls: int
    warmup: int


QUICK = Budget(env_steps=50, renders=30, train_steps=3, augment_calls=10, decode_calls=10, warmup=2)
FULL = Budget(env_steps=400, renders=200, train_steps=40, augment_calls=100, decode_calls=200, warmup=5)


# ----- 1 + 2: environment and rendering -----

def bench_env_steps(env: MetaWorldEnv, expert: ScriptedExpert, n: int, warmup: int) -> dict[str, object]:
    """Step with the expert's action; time ``env.step`` alone and ``expert.act`` + ``env.step``."""
    episode = 0
    env.reset(seed=episode)
    step_s, expert_step_s = [], []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        action = expert.act(env.state)
        t1 = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)
        t2 = time.perf_counter()
        if i >= warmup:
            step_s.append(t2 - t1)
            expert_step_s.append(t2 - t0)
        if terminated or truncated:
            episode += 1
            env.reset(seed=episode)
    step, expert_step = summarize(step_s), summarize(expert_step_s)
    return {"step": step, "expert_step": expert_step, "episodes_started": episode + 1,
            "step_per_s": per_second(step), "expert_step_per_s": per_second(expert_step)}


def bench_env_task(task: str, image_size: int, budget: Budget) -> dict[str, object]:
    env = make_env(task, EnvConfig(image_size=image_size))
    try:
        steps = bench_env_steps(env, ScriptedExpert(task), budget.env_steps, budget.warmup)
        render = time_calls(env.render, budget.renders, budget.warmup)
    finally:
        env.close()
    return {"task": task, "image_size": image_size, **steps, "render": render, "render_fps": per_second(render)}


def bench_envs(budget: Budget, console: Console) -> list[dict[str, object]]:
    rows = []
    for size in ENV_IMAGE_SIZES:
        for task in DEV_SUITE:
            console.log(f"env {task} @ {size} px")
            rows.append(bench_env_task(task, size, budget))
    return rows


# ----- 3 + 4: model -----

def random_batch(policy: VLAPolicy, batch_size: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    s, tok = policy.config.image_size, policy.tokenizer
    chunks = torch.rand(batch_size, tok.horizon, tok.action_dim, generator=gen) * 2 - 1
    lang = torch.randn(batch_size, LANG_DIM, generator=gen)
    return {
        "image": torch.randint(0, 256, (batch_size, s, s, 3), dtype=torch.uint8, generator=gen),
        "proprio": torch.randn(batch_size, policy.config.proprio_dim, generator=gen),
        "lang": lang / lang.norm(dim=1, keepdim=True),
        "chunks": chunks,
        "tokens": torch.from_numpy(tok.encode(chunks.numpy())),
    }


def bench_train(budget: Budget) -> dict[str, object]:
    """One trainer step (BC loss + metrics, backward, grad clip, AdamW) on a fixed random batch."""
    cfg = TrainConfig(batch_size=TRAIN_BATCH)
    gen = torch.Generator().manual_seed(0)
    policy = build_base_policy(BaseRecipe().horizon).train()
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    objective = OBJECTIVES.get("bc")()
    batch = random_batch(policy, cfg.batch_size, gen)

    def step() -> None:
        loss, _ = objective(policy, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()

    train = time_calls(step, budget.train_steps, budget.warmup)
    augment = time_calls(lambda: random_shift(batch["image"], cfg.shift_pad, gen), budget.augment_calls, budget.warmup)
    return {
        "batch_size": cfg.batch_size, "image_size": MODEL_IMAGE_SIZE, "shift_pad": cfg.shift_pad,
        "num_params": sum(p.numel() for p in params), "step": train, "augment": augment,
        "samples_per_s": per_second(train, cfg.batch_size),
        "samples_per_s_with_augment": cfg.batch_size / ((train["mean_ms"] + augment["mean_ms"]) / 1e3),
    }


def bench_decode_case(policy: VLAPolicy, batch_size: int, budget: Budget) -> dict[str, object]:
    batch = random_batch(policy, batch_size, torch.Generator().manual_seed(batch_size))
    inputs = (batch["image"], batch["lang"], batch["proprio"])
    model = policy.model
    cached = time_calls(lambda: model.generate(*inputs, use_cache=True), budget.decode_calls, budget.warmup)
    uncached = time_calls(lambda: model.generate(*inputs, use_cache=False), budget.decode_calls, budget.warmup)
    return {"horizon": policy.tokenizer.horizon, "tokens": policy.tokenizer.num_tokens, "batch": batch_size,
            "cache": cached, "no_cache": uncached, "speedup": uncached["mean_ms"] / cached["mean_ms"]}


def bench_decode(budget: Budget) -> list[dict[str, object]]:
    rows = []
    for horizon in DECODE_HORIZONS:
        policy = build_base_policy(horizon).eval()
        rows += [bench_decode_case(policy, b, budget) for b in DECODE_BATCHES]
    return rows


# ----- report -----

def render_report(results: dict[str, object], console: Console) -> None:
    print_machine(results, console)
    console.print(table(
        "Environment (expert actions; step includes render)",
        ["task", "px", "step/s", "step ms p90", "expert+step/s", "render fps", "render ms p90"],
        [[r["task"], str(r["image_size"]), f"{r['step_per_s']:.0f}", f"{r['step']['p90_ms']:.2f}",
          f"{r['expert_step_per_s']:.0f}", f"{r['render_fps']:.0f}", f"{r['render']['p90_ms']:.2f}"]
         for r in results["env"]],
    ))
    tr = results["train"]
    console.print(table(
        f"Training (base model, bins, {tr['num_params'] / 1e6:.2f} M params, {tr['image_size']} px)",
        ["batch", "step ms mean", "step ms p90", "samples/s", f"random_shift({tr['shift_pad']}) ms", "samples/s incl. aug"],
        [[str(tr["batch_size"]), f"{tr['step']['mean_ms']:.1f}", f"{tr['step']['p90_ms']:.1f}",
          f"{tr['samples_per_s']:.0f}", f"{tr['augment']['mean_ms']:.2f}", f"{tr['samples_per_s_with_augment']:.0f}"]],
    ))
    console.print(table(
        "Decoding (TinyVLA.generate, greedy)",
        ["horizon (tokens)", "batch", "cache ms mean", "cache ms p90", "no-cache ms mean", "no-cache ms p90", "speed-up"],
        [[f"{r['horizon']} ({r['tokens']})", str(r["batch"]), f"{r['cache']['mean_ms']:.2f}",
          f"{r['cache']['p90_ms']:.2f}", f"{r['no_cache']['mean_ms']:.2f}", f"{r['no_cache']['p90_ms']:.2f}",
          f"{r['speedup']:.2f}x"] for r in results["decode"]],
    ))


def measure(budget: Budget, console, args) -> dict[str, object]:
    out: dict[str, object] = {"env": bench_envs(budget, console)}
    console.log("training step")
    out["train"] = bench_train(budget)
    console.log("decoding")
    out["decode"] = bench_decode(budget)
    return out


def main() -> None:
    run_script(__doc__, DEFAULT_OUT, THREADS, QUICK, FULL, measure, render_report)


if __name__ == "__main__":
    main()
