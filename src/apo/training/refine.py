"""Refinement of a base policy on interaction data (``apo refine``).

Data: the interaction episodes (labels 0/1/2, the policy's proposals) plus the first
``demos_per_task`` expert demonstrations of each task. The reference is a frozen copy of the
base policy, scored once (``CachedReference``). Only LoRA adapters are trained (``lora_rank=0``
trains every weight); they are merged before the refined policy is saved to ``<out>/policy``.
Launched with torchrun it trains on several processes (``apo.training.distributed``); the batch size
is the global one.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from apo.data import Episode, load_episodes
from apo.data.balanced import BalancedSampler, BucketShares
from apo.data.dataset import AUTONOMOUS, CATEGORY_NAMES, StepData
from apo.deployment.labels import (
    policy_steps_before_window,
    relabel_with_k,
    unrescued_person_steps,
    unrescued_undesirable_steps,
)
from apo.envs.metaworld_env import RenderingMismatchError, recorded_rendering
from apo.models import VLAPolicy
from apo.models.lora import add_lora, merge_lora
from apo.objectives import OBJECTIVES
from apo.objectives.refinement import WEIGHT_DECODES
from apo.training import distributed
from apo.training.reference import CachedReference, OnlineReference
from apo.training.trainer import TrainConfig, train


@dataclass(frozen=True)
class RefineConfig:
    objective: str = "apo"
    """Registered objective: apo, kto, dpo, hg-dagger, iwr, sirius, bc."""
    beta: float = 0.5
    """Inverse temperature of the preference objectives (apo, kto, dpo). 0.5 is what improved the base in
    docs/results.md (runs 5, 6); 0.1 (TRL's KTO default, used before) let the undesirable push run on."""
    beta_d: float = 1.0
    """APO adaptive weight scale of desirable samples: lambda_D = 1 - exp(-beta_D w)."""
    beta_u: float = 1.0
    """APO adaptive weight scale of undesirable samples: lambda_U = exp(-beta_U w)."""
    exclude_gripper: bool = True
    """Leave the gripper tokens out of the undesirable reward (apo, kto)."""
    kl_samples: int = 16
    """Mismatched pairs per batch used for the KL estimate z0."""
    anchor_weight: float = 0.0
    """apo, kto: add this times the token cross-entropy of the batch's expert demonstration steps to the
    loss, an anchor on what the base learned (0: the paper's loss; not part of APO)."""
    weight_decode: Literal["teacher-forced", "greedy"] = "teacher-forced"
    """apo: the policy's action its adaptive weights compare with the label. teacher-forced: the argmax
    of every token given the label's earlier tokens (one pass, as the paper's code; a FAST sequence
    decoded so is often not well-formed and its sample then gets weight 1). greedy: the chunk the policy
    would execute, generated with constrained decoding (always decodable; one generation per step)."""
    lora_rank: int = 32
    """LoRA rank on the transformer's linear layers; 0 fine-tunes every weight."""
    lora_alpha: float = 32.0
    """LoRA scaling numerator (scale = alpha / rank)."""
    reference: Literal["cached", "online"] = "cached"
    """Reference log-probs scored once per dataset (cached) or by a frozen model every step (online)."""
    demos_per_task: int = 20
    """Expert demonstrations per task mixed into refinement (the paper: 20)."""
    k_undesirable: int | None = None
    """Relabel the interaction episodes with this many undesirable policy steps before each takeover
    (None: the K they were collected with, recorded in each episode)."""
    pre_window_steps: Literal["desirable", "drop"] = "desirable"
    """The policy's steps in a stretch that ended in a takeover, before its K undesirable steps. desirable:
    pushed up with the autonomous steps (the paper). drop: left out of training; the simulated person steps
    in after 40 steps without progress, so with K = 10 the 30 stalled steps before the window look like
    the undesirable ones (docs/results.md, shelf-place's collapse)."""
    corrections: Literal["all", "rescued"] = "all"
    """The person's steps trained on as corrections. all: every one (the paper: a person's help is right).
    rescued: only those of episodes that then succeeded. The simulated person (MetaWorld's scripted expert)
    cannot rescue every state a policy leaves, and most of its steps go into episodes that fail anyway
    (docs/results.md, "Sixth loop")."""
    undesirable: Literal["all", "rescued"] = "all"
    """The policy's steps pushed down as undesirable. all: the K before every takeover (the paper). rescued:
    only those of episodes that then succeeded, so every window pushed down comes with help that showed a
    way out; in an episode the person could not rescue, the policy's failure has no correction beside it."""
    autonomous: Literal["all", "none"] = "all"
    """The policy's own steps (label 1) in the interaction episodes. all: pushed up with the expert demos (the
    paper). none: left out, so the desirable share of each batch is the demos alone (needs demos_per_task >
    0); the policy's own steps include grasps that held by luck (docs/results.md, "Nineteenth loop")."""
    shares: BucketShares = field(default_factory=BucketShares)
    """Batch composition."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1500, lr=1e-4, warmup_steps=50, shift_pad=0, checkpoint_every=250, log_every=25))
    """Optimization (augmentation off by default: the cached reference scored the raw images)."""

    def __post_init__(self) -> None:
        objective = OBJECTIVES.get(self.objective)  # unknown names fail here, listing the valid ones
        if self.beta <= 0 or self.beta_d <= 0 or self.beta_u <= 0:
            raise ValueError("beta, beta_d and beta_u must be > 0")
        if self.anchor_weight < 0:
            raise ValueError(f"anchor_weight must be >= 0, got {self.anchor_weight}")
        if self.weight_decode not in WEIGHT_DECODES:
            raise ValueError(f"weight_decode must be one of {WEIGHT_DECODES}, got {self.weight_decode!r}")
        if self.k_undesirable is not None and self.k_undesirable < 0:
            raise ValueError(f"k_undesirable must be >= 0 (or None: as collected), got {self.k_undesirable}")
        if self.pre_window_steps not in ("desirable", "drop"):
            raise ValueError(f"pre_window_steps must be 'desirable' or 'drop', got {self.pre_window_steps!r}")
        if self.corrections not in ("all", "rescued"):
            raise ValueError(f"corrections must be 'all' or 'rescued', got {self.corrections!r}")
        if self.undesirable not in ("all", "rescued"):
            raise ValueError(f"undesirable must be 'all' or 'rescued', got {self.undesirable!r}")
        if self.autonomous not in ("all", "none"):
            raise ValueError(f"autonomous must be 'all' or 'none', got {self.autonomous!r}")
        if self.autonomous == "none" and self.demos_per_task == 0:
            raise ValueError("autonomous='none' leaves no desirable steps without demos: "
                             "set demos_per_task > 0 (and pass --demos) or keep autonomous='all'")
        if self.lora_rank < 0 or self.kl_samples < 1 or self.demos_per_task < 0:
            raise ValueError("lora_rank and demos_per_task must be >= 0, kl_samples >= 1")
        if self.reference == "cached" and self.train.shift_pad and objective.uses_reference:
            raise ValueError(
                "image augmentation (train.shift_pad > 0) changes the observations the cached reference "
                "scored; set --train.shift-pad 0 or --reference online"
            )


def select_demos(demos: list[Episode], per_task: int) -> list[Episode]:
    counts: dict[str, int] = {}
    out = []
    for ep in demos:
        if counts.get(ep.task, 0) < per_task:
            out.append(ep)
            counts[ep.task] = counts.get(ep.task, 0) + 1
    return out


def _reference(policy: VLAPolicy, data: StepData, cfg: RefineConfig, cache_path: Path,
               main: bool) -> CachedReference | OnlineReference:
    """The frozen base policy's log-probs: scored once and cached (rank 0 writes, the others read), or
    scored online every step."""
    ref_policy = copy.deepcopy(policy).eval()
    for p in ref_policy.parameters():
        p.requires_grad_(False)
    if cfg.reference == "cached":  # scored and saved by rank 0, read by the other processes
        reference = CachedReference.load_if_matching(cache_path, data, cfg.train.seed) if main else None
        if main and reference is None:
            reference = CachedReference.compute(ref_policy, data, seed=cfg.train.seed)
            reference.save(cache_path)
        distributed.barrier()
        if not main:
            reference = CachedReference.load_if_matching(cache_path, data, cfg.train.seed)
            if reference is None:
                raise RuntimeError(f"{cache_path} written by rank 0 does not match this process's data; "
                                   "every process must see the same dataset folders")
    else:
        reference = OnlineReference(ref_policy, data, seed=cfg.train.seed)
    return reference


def refine(base_policy: str | os.PathLike, interactions: str | os.PathLike | list[str | os.PathLike],
           demos: str | os.PathLike | None, out_dir: str | os.PathLike, cfg: RefineConfig = RefineConfig(),
           reference_cache: str | os.PathLike | None = None) -> VLAPolicy:
    """Refine ``base_policy`` on the interaction episodes (plus demos) and save it to ``out_dir/policy``.

    ``reference_cache`` is where the cached reference log-probs are kept (default
    ``out_dir/reference_cache.pt``); runs on the same base, data and training seed may share one file.
    """
    distributed.init_from_env()  # several processes when launched with torchrun
    main = distributed.is_main()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    policy = VLAPolicy.load(base_policy)
    inter_dirs = interactions if isinstance(interactions, list) else [interactions]
    episodes = load_episodes(*inter_dirs)
    if cfg.k_undesirable is not None:  # per episode: a window never reaches into another one
        for ep in episodes:
            ep.labels = relabel_with_k(ep.labels, cfg.k_undesirable)
            ep.extras["k_undesirable"] = str(cfg.k_undesirable)
    if demos is not None and cfg.demos_per_task:
        episodes += select_demos(load_episodes(demos), cfg.demos_per_task)
    rendering = recorded_rendering([ep.extras for ep in episodes], "the refinement data")
    if rendering and policy.rendering and rendering != policy.rendering:
        raise RenderingMismatchError(
            f"the refinement data were rendered with {rendering} but {base_policy} was trained on "
            f"{policy.rendering}; collect them with the base policy's --env.* options")
    data = StepData.from_episodes(episodes, policy.tokenizer)
    pre_window = torch.from_numpy(np.concatenate([policy_steps_before_window(ep.labels) for ep in episodes]))

    def failed_mask(find) -> torch.Tensor:  # demos are the expert's own episodes, not help
        return torch.from_numpy(np.concatenate([
            np.zeros(len(ep), bool) if ep.source == "expert" else find(ep.labels, ep.success) for ep in episodes]))

    unrescued = failed_mask(unrescued_person_steps)
    unrescued_windows = failed_mask(unrescued_undesirable_steps)
    del episodes  # the steps are in data now; the episodes' own arrays would double the images' memory
    drop = torch.zeros_like(pre_window)
    if cfg.pre_window_steps == "drop":
        drop |= pre_window
    if cfg.corrections == "rescued":
        drop |= unrescued
    if cfg.undesirable == "rescued":
        drop |= unrescued_windows
    if cfg.autonomous == "none":
        drop |= data.categories == AUTONOMOUS
    if drop.any():
        data = data.select(~drop)
    counts = {CATEGORY_NAMES[c]: int((data.categories == c).sum()) for c in CATEGORY_NAMES}
    if main:
        (out / "refine_config.json").write_text(json.dumps({
            "config": asdict(cfg), "steps_per_category": counts, "pre_window_steps": int(pre_window.sum()),
            "unrescued_person_steps": int(unrescued.sum()),
            "unrescued_undesirable_steps": int(unrescued_windows.sum())}, indent=2))

    objective = OBJECTIVES.get(cfg.objective).from_config(cfg)
    cache_path = Path(reference_cache) if reference_cache is not None else out / "reference_cache.pt"
    reference = _reference(policy, data, cfg, cache_path, main) if objective.uses_reference else None

    torch.manual_seed(cfg.train.seed)  # peft draws the LoRA A matrices from the global generator
    params = add_lora(policy, cfg.lora_rank, cfg.lora_alpha) if cfg.lora_rank else None
    sampler = BalancedSampler(data.categories, cfg.train.batch_size, cfg.shares, seed=cfg.train.seed)
    train(policy, data, objective, cfg.train, out, sampler=sampler, params=params,
          prepare=reference.fill if reference is not None else None,
          desc=f"refine ({cfg.objective})")
    merge_lora(policy)
    if main:
        policy.save(out / "policy")
    distributed.barrier()
    return policy
