"""Refinement objectives on interaction data: APO, KTO, DPO and the weighted-BC baselines.

Each class only gathers inputs from the batch (filled with reference log-probs by
``apo.training.reference``) and calls the pure functions in ``preference.py`` / ``bc.py``.
Batch categories: 0 undesirable (pre-takeover), 1 autonomous, 2 correction, 3 expert.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from apo.data.dataset import AUTONOMOUS, CORRECTION, EXPERT, UNDESIRABLE
from apo.data.sampler import shard_positions
from apo.objectives.base import OBJECTIVES
from apo.objectives.collectives import all_reduce_sum, world
from apo.objectives.bc import weighted_token_nll
from apo.objectives.metrics import decoded_l1, generated_l1, token_accuracy
from apo.objectives.preference import (
    adaptive_weights, apo_loss, dpo_loss, kl_estimate, sequence_reward,
)


WEIGHT_DECODES = ("teacher-forced", "greedy")
"""How APO decodes the policy's action for its adaptive weights (RefineConfig.weight_decode)."""


def _token_logps(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float(), -1).gather(-1, tokens[..., None]).squeeze(-1)


def _mean(x: torch.Tensor) -> float:
    return x.mean().item() if x.numel() else float("nan")


@OBJECTIVES.register("apo")
@dataclass
class APO:
    """Action Preference Optimization: prospect-theoretic utility with adaptive weights."""

    uses_reference = True
    beta: float = 0.5  # apo refine's default (RefineConfig.beta)
    beta_d: float = 1.0
    beta_u: float = 1.0
    adaptive: bool = True
    exclude_gripper: bool = True
    kl_samples: int = 16
    anchor_weight: float = 0.0
    """Weight of a token cross-entropy term on the batch's expert demonstration steps (0: the paper's loss)."""
    weight_decode: str = "teacher-forced"
    """Policy action behind the adaptive weights: teacher-forced argmax (the paper's code) or greedy (generated)."""

    def __post_init__(self) -> None:
        if self.weight_decode not in WEIGHT_DECODES:
            raise ValueError(f"weight_decode must be one of {WEIGHT_DECODES}, got {self.weight_decode!r}")

    @classmethod
    def from_config(cls, cfg) -> "APO":
        return cls(beta=cfg.beta, beta_d=cfg.beta_d, beta_u=cfg.beta_u, kl_samples=cfg.kl_samples,
                   exclude_gripper=cfg.exclude_gripper, anchor_weight=cfg.anchor_weight,
                   weight_decode=cfg.weight_decode)

    def __call__(self, policy, batch):
        m, tok = policy.model, policy.tokenizer
        prefix = m.embed_prefix(batch["image"], batch["lang"], batch["proprio"])
        logits = m.forward_from_prefix(prefix, batch["tokens"])
        logps = _token_logps(logits, batch["tokens"])
        desirable = batch["categories"] != UNDESIRABLE
        # only real tokens count (padding of variable-length tokenizers does not); the gripper tokens are
        # left out of the undesirable reward only (supp. Sec. 3)
        valid = tok.token_mask(batch["tokens"])
        mask = valid.clone()
        if self.exclude_gripper:
            gripper = torch.as_tensor(tok.gripper_token_mask(batch["tokens"]), device=mask.device)
            mask[~desirable] &= ~gripper[~desirable]
        rewards = sequence_reward(logps, batch["ref_logp"], mask)
        # z0 from kl_samples mismatched pairs of the global batch (this process scores those in its shard)
        rank, world_size = world()
        B = logps.shape[0]
        step = max(1, B * world_size // self.kl_samples)
        pos = shard_positions(B, rank, world_size)
        sub = torch.nonzero((pos % step == 0) & (pos // step < self.kl_samples)).flatten()
        kl_tokens = batch["kl_tokens"][sub]
        with torch.no_grad():
            kl_logps = _token_logps(m.forward_from_prefix(prefix[sub], kl_tokens), kl_tokens)
        z0 = kl_estimate(kl_logps, batch["ref_kl_logp"][sub], mask=tok.token_mask(kl_tokens))
        if self.weight_decode == "greedy" and self.adaptive:
            errors = generated_l1(m, batch, tok)
        else:
            errors = decoded_l1(logits, batch["chunks"], tok)
        weights = adaptive_weights(errors, desirable, self.beta_d, self.beta_u) if self.adaptive else None
        loss = apo_loss(rewards, desirable, z0, self.beta, weights)
        metrics = {}
        if self.anchor_weight:
            # L + alpha * CE(expert steps): keeps the policy on the demonstrations it was trained on
            anchor = weighted_token_nll(logits, batch["tokens"], (batch["categories"] == EXPERT).float(), mask=valid)
            loss = loss + self.anchor_weight * anchor
            metrics["anchor_nll"] = anchor.item()
        r = rewards.detach()
        w = weights if weights is not None else torch.ones_like(r)
        return loss, {
            "loss": loss.item(), "kl": z0.item(),
            "rewards/desirable": _mean(r[desirable]), "rewards/undesirable": _mean(r[~desirable]),
            "margins": _mean(r[desirable]) - _mean(r[~desirable]),
            "weights/desirable": _mean(w[desirable]), "weights/undesirable": _mean(w[~desirable]),
            "token_acc": token_accuracy(logits, batch["tokens"], valid),
            "l1": errors[desirable].nanmean().item() if desirable.any() else float("nan"),
            "undecodable": torch.isnan(errors).float().mean().item(), **metrics,
        }


@OBJECTIVES.register("kto")
@dataclass
class KTO(APO):
    """KTO on action tokens: APO with every weight 1."""

    adaptive: bool = False

    @classmethod
    def from_config(cls, cfg) -> "KTO":
        return cls(beta=cfg.beta, kl_samples=cfg.kl_samples, exclude_gripper=cfg.exclude_gripper,
                   anchor_weight=cfg.anchor_weight)


@OBJECTIVES.register("dpo")
@dataclass
class DPO:
    """DPO pairs: the person's correction (chosen) vs the policy's own proposal at the same step (rejected)."""

    uses_reference = True
    beta: float = 0.5  # apo refine's default (RefineConfig.beta)

    @classmethod
    def from_config(cls, cfg) -> "DPO":
        return cls(beta=cfg.beta)

    def __call__(self, policy, batch):
        if "policy_tokens" not in batch:
            raise ValueError("DPO needs the policy's proposed actions (interaction episodes recorded by apo collect)")
        m, tok = policy.model, policy.tokenizer
        sel = batch["categories"] == CORRECTION
        prefix = m.embed_prefix(batch["image"][sel], batch["lang"][sel], batch["proprio"][sel])
        chosen, rejected = batch["tokens"][sel], batch["policy_tokens"][sel]
        logits_c = m.forward_from_prefix(prefix, chosen)
        r_c = sequence_reward(_token_logps(logits_c, chosen), batch["ref_logp"][sel], tok.token_mask(chosen))
        r_r = sequence_reward(_token_logps(m.forward_from_prefix(prefix, rejected), rejected), batch["ref_policy_logp"][sel],
                              tok.token_mask(rejected))
        loss = dpo_loss(r_c, r_r, self.beta)
        return loss, {
            "loss": loss.item(), "pairs": float(sel.sum()), "rewards/desirable": _mean(r_c.detach()),
            "rewards/undesirable": _mean(r_r.detach()), "margins": _mean((r_c - r_r).detach()),
            "token_acc": token_accuracy(logits_c, chosen, tok.token_mask(chosen)) if sel.any() else float("nan"),
        }


@dataclass
class WeightedBC:
    """Token cross-entropy with a weight per step category (the BC-family baselines)."""

    uses_reference = False  # no reference log-probs: refinement skips scoring them
    expert: float = 1.0
    correction: float = 1.0
    autonomous: float = 0.0
    undesirable: float = 0.0
    balance_interventions: bool = False
    """IWR: scale weights so corrections and all other steps carry equal total weight in each batch."""

    @classmethod
    def from_config(cls, cfg) -> "WeightedBC":
        return cls()

    def sample_weights(self, categories: torch.Tensor) -> torch.Tensor:
        table = torch.zeros(4)
        table[EXPERT], table[CORRECTION] = self.expert, self.correction
        table[AUTONOMOUS], table[UNDESIRABLE] = self.autonomous, self.undesirable
        w = table[categories.long()]
        if self.balance_interventions:  # group totals of the global batch (all-reduced across processes)
            inter = categories == CORRECTION
            for group in (inter, ~inter):
                total = all_reduce_sum(w[group].sum())
                if total > 0:
                    w[group] = w[group] / total * 0.5
        return w

    def __call__(self, policy, batch):
        logits = policy.logits(batch)
        w = self.sample_weights(batch["categories"])
        valid = policy.tokenizer.token_mask(batch["tokens"])
        loss = weighted_token_nll(logits, batch["tokens"], w, mask=valid)
        return loss, {
            "loss": loss.item(), "token_acc": token_accuracy(logits, batch["tokens"], valid),
            "l1": decoded_l1(logits, batch["chunks"], policy.tokenizer).nanmean().item(),
        }


@OBJECTIVES.register("hg-dagger")
class HGDAgger(WeightedBC):
    """HG-DAgger: behaviour cloning on expert demonstrations and the person's corrections only."""


@OBJECTIVES.register("iwr")
class IWR(WeightedBC):
    """Intervention-weighted regression: BC on all steps, corrections and the rest weighted 50/50."""

    @classmethod
    def from_config(cls, cfg) -> "IWR":
        return cls(expert=1.0, correction=1.0, autonomous=1.0, undesirable=1.0, balance_interventions=True)


@OBJECTIVES.register("sirius")
class Sirius(WeightedBC):
    """Sirius-style weighted BC: corrections up-weighted, pre-takeover steps down-weighted."""

    @classmethod
    def from_config(cls, cfg) -> "Sirius":
        return cls(expert=1.0, correction=2.0, autonomous=1.0, undesirable=0.1)
