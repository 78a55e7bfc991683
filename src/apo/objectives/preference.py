"""Pure loss functions of the preference objectives (APO, KTO, DPO).

Inputs are per-token log-probs of the trained policy and the frozen reference, masks, labels
and weights; nothing here touches models or data. Equation numbers refer to the APO paper
(Xia et al., NeurIPS 2025, arXiv:2506.07127) and its supplementary material.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from apo.objectives.collectives import all_reduce_sum, global_mean


def sequence_reward(logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """r(o, a) = sum_t m_t [log pi_theta(a_t | o, a_<t) - log pi_ref(a_t | o, a_<t)]   (reward, Sec. 3.2)

    logps, ref_logps: (B, N); mask: (N,) or (B, N) bool/float, 1 = token counts. Returns (B,).
    """
    if logps.shape != ref_logps.shape:
        raise ValueError(f"policy and reference log-probs differ in shape: {tuple(logps.shape)} vs {tuple(ref_logps.shape)}")
    diff = logps - ref_logps
    if mask is not None:
        diff = diff * mask.to(diff.dtype)
    return diff.sum(-1)


def kl_estimate(kl_logps: torch.Tensor, kl_ref_logps: torch.Tensor, distributed: bool | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """z0 = max(0, mean_i r(o_i, a_j(i)))  over mismatched pairs, detached     (z0 = KL(pi_theta || pi_ref), KTO)

    ``mask`` (B, N) marks the real tokens of the partners' sequences (padding does not count).
    The mean is taken over the whole global batch: with torch.distributed initialized the sum and
    the count are all-reduced, so every process uses the same z0.
    """
    r = sequence_reward(kl_logps, kl_ref_logps, mask).detach()
    total = torch.stack([r.sum(), torch.tensor(float(r.numel()), dtype=r.dtype, device=r.device)])
    total = all_reduce_sum(total, distributed)
    return (total[0] / total[1].clamp_min(1)).clamp_min(0.0)


def batch_normalized(errors: torch.Tensor, distributed: bool | None = None) -> torch.Tensor:
    """w_i = l_i / sum_j l_j, rescaled by the count so that the weights average 1.

    The paper's w = l / sum(l) shrinks with the batch size; multiplying by the count keeps the
    meaning of beta_D and beta_U independent of it (w = 1 for a sample of average error).
    Sum and count are over the global batch (all-reduced when torch.distributed is initialized;
    collective: every process calls it, also with no errors of its own).
    """
    errors = errors.detach().abs()
    total = torch.stack([errors.sum(), torch.tensor(float(errors.numel()), dtype=errors.dtype, device=errors.device)])
    total = all_reduce_sum(total, distributed)
    if errors.numel() == 0:
        return errors
    return errors * total[1] / total[0].clamp_min(1e-8)


def adaptive_weights(errors: torch.Tensor, desirable: torch.Tensor, beta_d: float, beta_u: float,
                     distributed: bool | None = None) -> torch.Tensor:
    """lambda_D = 1 - exp(-beta_D w) for desirable, lambda_U = exp(-beta_U w) for undesirable   (adaptive reweighting, Sec. 3.3)

    ``errors`` (B,) is the L1 error of the decoded continuous action against the sample's action;
    ``w`` is normalized within the desirable and within the undesirable samples of the (global) batch.
    NaN errors (a sequence that cannot be decoded, e.g. malformed FAST tokens) get weight 1.
    """
    desirable = desirable.bool()
    lam = torch.ones_like(errors, dtype=torch.float32)
    for group, fn in ((desirable, lambda w: 1 - torch.exp(-beta_d * w)), (~desirable, lambda w: torch.exp(-beta_u * w))):
        ok = group & torch.isfinite(errors)
        lam[ok] = fn(batch_normalized(errors[ok].float(), distributed))
    return lam


def prospect_utility(rewards: torch.Tensor, desirable: torch.Tensor, z0: torch.Tensor, beta: float,
                     weights: torch.Tensor | None = None) -> torch.Tensor:
    """v = lambda_D sigma(beta (r - z0)) if desirable, lambda_U sigma(beta (z0 - r)) if undesirable   (Eq. 1, supp.)"""
    desirable = desirable.bool()
    margin = torch.where(desirable, rewards - z0, z0 - rewards)
    v = torch.sigmoid(beta * margin)
    return v if weights is None else weights * v


def apo_loss(rewards: torch.Tensor, desirable: torch.Tensor, z0: torch.Tensor, beta: float,
             weights: torch.Tensor | None = None) -> torch.Tensor:
    """L = -E[v(o, a)]   (APO objective; KTO when all weights are 1)

    On several processes each holds an equal shard, so the mean of their losses is the global loss."""
    return -prospect_utility(rewards, desirable, z0, beta, weights).mean()


def dpo_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, beta: float,
             distributed: bool | None = None) -> torch.Tensor:
    """L = -E[log sigma(beta (r_chosen - r_rejected))]   (DPO, Rafailov et al. 2023, Eq. 7)

    The mean is over the pairs of the global batch: the local sum is divided by the mean number of
    pairs per process (all-reduced), so the mean of the process losses is the global loss."""
    n = global_mean(torch.tensor(float(chosen_rewards.numel())), distributed)
    if n.item() == 0:
        return chosen_rewards.sum() * 0.0
    return -F.logsigmoid(beta * (chosen_rewards - rejected_rewards)).sum() / n
