"""Refinement benchmark: APO train-step time relative to behaviour cloning on the same batch.

Goal: an APO step with the cached reference costs <= 1.2x a BC step.
Data: hand-made episodes with random images and smooth random actions (expert demonstrations
plus interaction episodes with takeovers, pre-takeover relabeling and the policy's proposals),
turned into ``StepData``; the default-size base policy (untrained), horizon 4, batch 64 drawn by
the ``BalancedSampler`` (50/25/25). As in ``refine()``: the reference is a frozen deep copy of
the base policy, scored once (``CachedReference``) or every step (``OnlineReference``); LoRA
(rank 32) adapters are the only trained weights. A timed step is what the trainer does per step:
gather the batch, ``reference.fill`` (the prepare hook), the objective's forward + loss + metrics,
backward, grad clip, AdamW step. Cases:

* ``bc-full``: full-parameter BC (as the base policy is trained);
* ``bc-lora``: BC on the LoRA adapters (the like-for-like baseline of the refinement objectives);
* ``apo-cached``, ``apo-online``, ``kto-cached``, ``dpo-cached`` (DPO scores only the batch's
  corrections, paired with the policy's own proposal).

Every repetition draws one batch and times one step of every case on it, interleaved (a, b, c,
a, b, c, ...); times are medians, ratios are medians of the per-repetition ratios.

Usage::

    python benchmarks/bench_refine.py [--quick] [--threads 1] [--out benchmarks/results/refine.json]

``--quick`` is a smoke test with few steps; the full run takes ~1.5 min on 2 idle cores. Run it on an
idle machine: the JSON records the load average at the start and at the end.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from _common import (
    run_script,
    MODEL_IMAGE_SIZE, RESULTS_DIR, build_base_policy, interleaved, paired_ratio, print_machine, summarize, table,
)
from apo.data import Episode
from apo.data.balanced import BalancedSampler
from apo.data.dataset import CATEGORY_NAMES, StepData
from apo.deployment.labels import relabel_pre_takeover
from apo.deployment.runner import DeployConfig
from apo.envs import ACTION_DIM, DEV_SUITE, PROPRIO_DIM, get_task
from apo.models.lora import add_lora
from apo.objectives import OBJECTIVES
from apo.training.base_policy import BaseRecipe
from apo.training.reference import CachedReference, OnlineReference
from apo.training.refine import RefineConfig
from apo.training.trainer import TrainConfig

THREADS = 1
GOAL_RATIO = 1.2
DEFAULT_OUT = RESULTS_DIR / "refine.json"
DEMO_STEPS, INTERACTION_STEPS, HOLD_STEPS = 60, 100, 15
BC_CASES = ("bc-full", "bc-lora")


@dataclass(frozen=True)
class Budget:
    steps: int
    """Timed repetitions (one optimizer step of every case each)."""
    warmup: int
    """Untimed repetitions before them."""
    demos: int
    """Synthetic expert demonstrations."""
    interactions: int
    """Synthetic interaction episodes (two takeovers each)."""


QUICK = Budget(steps=12, warmup=1, demos=4, interactions=4)
FULL = Budget(steps=60, warmup=2, demos=8, interactions=8)


# ----- synthetic data -----

def smooth_actions(rng: np.random.Generator, T: int) -> np.ndarray:
    """Random-walk xyz deltas in [-1, 1] and a gripper that opens/closes a few times."""
    xyz = np.clip(np.cumsum(rng.normal(0, 0.15, (T, ACTION_DIM - 1)), axis=0), -1, 1)
    grip = np.where(np.cumsum(rng.random(T) < 0.05) % 2, 1.0, -1.0)[:, None]
    return np.concatenate([xyz, grip], axis=1).astype(np.float32)


def synthetic_episode(rng: np.random.Generator, i: int, T: int, size: int, interaction: bool) -> Episode:
    task = DEV_SUITE[i % len(DEV_SUITE)]
    actions = smooth_actions(rng, T)
    if interaction:  # the policy acts (1), the person takes over twice (2); then pre-takeover relabeling (0)
        raw = np.ones(T, np.int8)
        for start in (int(rng.integers(15, 30)), int(rng.integers(55, 70))):
            raw[start:start + HOLD_STEPS] = 2
        proposals = actions.copy()  # the policy's proposals equal the executed actions where it acted
        proposals[raw == 2] = smooth_actions(rng, int((raw == 2).sum()))
        kw = {"labels": relabel_pre_takeover(raw, DeployConfig().k_undesirable), "source": "interaction",
              "policy_actions": proposals}
    else:
        kw = {"labels": np.full(T, 2, np.int8), "source": "expert"}
    return Episode(
        task=task, instruction=get_task(task).instruction,
        images=rng.integers(0, 256, (T, size, size, 3), dtype=np.uint8),
        proprio=rng.normal(size=(T, PROPRIO_DIM)).astype(np.float32), actions=actions,
        rewards=rng.random(T).astype(np.float32), dones=np.arange(T) == T - 1, success=True, seed=i, **kw,
    )


def synthetic_data(budget: Budget, tokenizer, seed: int = 0) -> StepData:
    rng = np.random.default_rng(seed)
    episodes = [synthetic_episode(rng, i, DEMO_STEPS, MODEL_IMAGE_SIZE, False) for i in range(budget.demos)]
    episodes += [synthetic_episode(rng, i, INTERACTION_STEPS, MODEL_IMAGE_SIZE, True) for i in range(budget.interactions)]
    return StepData.from_episodes(episodes, tokenizer)


# ----- cases -----

@dataclass
class Case:
    name: str
    step: Callable[[torch.Tensor], dict[str, float]]
    trainable: int


def make_case(name: str, base, data: StepData, lang: torch.Tensor, objective, lora: bool,
              prepare: Callable[[dict], dict] | None, train_cfg: TrainConfig, rcfg: RefineConfig) -> Case:
    policy = copy.deepcopy(base)
    if lora:
        params = add_lora(policy, rcfg.lora_rank, rcfg.lora_alpha)
    else:
        params = [p for p in policy.parameters() if p.requires_grad]
    policy.train()
    opt = torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)

    def step(idx: torch.Tensor) -> dict[str, float]:
        t0 = time.perf_counter()
        batch = data.batch(idx, lang)
        if prepare is not None:
            batch = prepare(batch)
        t1 = time.perf_counter()
        loss, _ = objective(policy, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name}: loss {loss.item()}")
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, train_cfg.grad_clip)
        opt.step()
        t4 = time.perf_counter()
        return {"total": t4 - t0, "prepare": t1 - t0, "forward": t2 - t1, "backward": t3 - t2, "optim": t4 - t3}

    return Case(name, step, sum(p.numel() for p in params))


def bench(budget: Budget, console) -> dict[str, object]:
    rcfg = RefineConfig()
    base_cfg = BaseRecipe().train
    batch_size = rcfg.train.batch_size
    torch.manual_seed(0)
    base = build_base_policy(BaseRecipe().horizon)
    data = synthetic_data(budget, base.tokenizer)
    lang = base.embed_instructions(data.instructions)  # loads the sentence encoder, outside the timing

    ref_policy = copy.deepcopy(base).eval()
    for p in ref_policy.parameters():
        p.requires_grad_(False)
    console.log(f"reference log-probs of {len(data)} steps")
    t0 = time.perf_counter()
    cached = CachedReference.compute(ref_policy, data, seed=rcfg.train.seed)
    cache_s = time.perf_counter() - t0
    online = OnlineReference(ref_policy, data, seed=rcfg.train.seed)

    def objective(name: str):
        return OBJECTIVES.get(name).from_config(rcfg)

    cases = [
        make_case("bc-full", base, data, lang, objective("bc"), False, None, base_cfg, rcfg),
        make_case("bc-lora", base, data, lang, objective("bc"), True, None, rcfg.train, rcfg),
        make_case("apo-cached", base, data, lang, objective("apo"), True, cached.fill, rcfg.train, rcfg),
        make_case("apo-online", base, data, lang, objective("apo"), True, online.fill, rcfg.train, rcfg),
        make_case("kto-cached", base, data, lang, objective("kto"), True, cached.fill, rcfg.train, rcfg),
        make_case("dpo-cached", base, data, lang, objective("dpo"), True, cached.fill, rcfg.train, rcfg),
    ]
    sampler = BalancedSampler(data.categories, batch_size, rcfg.shares, seed=rcfg.train.seed)
    batches = [sampler.sample() for _ in range(budget.warmup + budget.steps)]
    runs = interleaved({c.name: (lambda rep, c=c: c.step(batches[rep])) for c in cases}, budget.steps, budget.warmup,
                       on_rep=lambda rep: console.log(f"repetition {rep + 1}/{budget.warmup + budget.steps}"))

    totals = {name: [r["total"] for r in rs] for name, rs in runs.items()}
    out_cases = {}
    for c in cases:
        rs = runs[c.name]
        out_cases[c.name] = {
            "trainable_params": c.trainable, "step": summarize(totals[c.name]),
            **{f"{phase}_ms": float(np.median([r[phase] for r in rs]) * 1e3)
               for phase in ("prepare", "forward", "backward", "optim")},
            **{f"ratio_vs_{bc}": paired_ratio(totals[c.name], totals[bc]) for bc in BC_CASES},
            **{f"ratio_of_medians_vs_{bc}": float(np.median(totals[c.name]) / np.median(totals[bc])) for bc in BC_CASES},
        }
    cats = data.categories[batches[0]]
    return {
        "dataset_steps": len(data), "batch_size": batch_size, "horizon": base.tokenizer.horizon,
        "image_size": MODEL_IMAGE_SIZE, "lora_rank": rcfg.lora_rank, "kl_samples": rcfg.kl_samples,
        "dataset_categories": {CATEGORY_NAMES[k]: int((data.categories == k).sum()) for k in CATEGORY_NAMES},
        "batch_categories": {CATEGORY_NAMES[k]: int((cats == k).sum()) for k in CATEGORY_NAMES},
        "reference_cache_s": round(cache_s, 2), "cases": out_cases,
    }


# ----- report -----

def render_report(results: dict[str, object], console) -> None:
    print_machine(results, console)
    r = results["refine"]
    cs = r["cases"]
    n = cs["bc-full"]["step"]["n"]
    console.print(table(
        f"Train step (batch {r['batch_size']} {r['batch_categories']}, horizon {r['horizon']}, {r['image_size']} px, "
        f"LoRA rank {r['lora_rank']}; {n} steps per case, interleaved; medians)",
        ["case", "trainable", "ms/step", "p90", "prepare", "fwd+loss", "backward", "clip+AdamW", "/ BC full", "/ BC LoRA"],
        [[name, f"{c['trainable_params'] / 1e6:.2f} M", f"{c['step']['median_ms']:.0f}", f"{c['step']['p90_ms']:.0f}",
          f"{c['prepare_ms']:.1f}", f"{c['forward_ms']:.0f}", f"{c['backward_ms']:.0f}", f"{c['optim_ms']:.1f}",
          f"{c['ratio_vs_bc-full']:.2f}", f"{c['ratio_vs_bc-lora']:.2f}"] for name, c in cs.items()],
    ))
    console.print(f"reference cache of {r['dataset_steps']} steps computed in {r['reference_cache_s']} s "
                  f"(once per dataset; {r['dataset_categories']})")
    apo = cs["apo-cached"]
    ok = apo["ratio_vs_bc-lora"] <= GOAL_RATIO
    console.print(f"goal: APO (cached) / BC <= {GOAL_RATIO} -> {apo['ratio_vs_bc-lora']:.2f} vs BC LoRA (like for like), "
                  f"{apo['ratio_vs_bc-full']:.2f} vs BC full: [{'green' if ok else 'red'}]{'met' if ok else 'NOT met'}[/]")


def main() -> None:
    run_script(__doc__, DEFAULT_OUT, THREADS, QUICK, FULL, lambda budget, console, args: {"refine": bench(budget, console)},
               render_report)


if __name__ == "__main__":
    main()
