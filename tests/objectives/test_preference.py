"""Pure preference losses (apo.objectives.preference) against hand-worked numbers, plus the KTO
objective against an independent plain-Python reimplementation."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from apo.objectives.preference import (
    adaptive_weights, apo_loss, batch_normalized, dpo_loss, kl_estimate, prospect_utility, sequence_reward,
)


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# ----- sequence_reward -----

LOGP = t([-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5])
REF = t([-1.5, -1.0, -3.0], [-1.0, -1.0, -2.0])
# diff = [[0.5, -1.0, 0.0], [0.5, 0.5, 1.5]]


def test_sequence_reward_no_mask():
    torch.testing.assert_close(sequence_reward(LOGP, REF), torch.tensor([-0.5, 2.5]))


def test_sequence_reward_shared_mask():
    torch.testing.assert_close(sequence_reward(LOGP, REF, torch.tensor([1.0, 0.0, 1.0])), torch.tensor([0.5, 2.0]))
    torch.testing.assert_close(sequence_reward(LOGP, REF, torch.tensor([True, False, True])), torch.tensor([0.5, 2.0]))


def test_sequence_reward_per_sample_mask():
    mask = torch.tensor([[True, True, False], [False, False, True]])
    torch.testing.assert_close(sequence_reward(LOGP, REF, mask), torch.tensor([-0.5, 1.5]))


def test_sequence_reward_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        sequence_reward(LOGP, REF[:, :2])


def test_sequence_reward_gradient_only_through_policy_and_mask():
    lp = LOGP.clone().requires_grad_(True)
    sequence_reward(lp, REF, torch.tensor([1.0, 0.0, 1.0])).sum().backward()
    torch.testing.assert_close(lp.grad, t([1.0, 0.0, 1.0], [1.0, 0.0, 1.0]))


# ----- kl_estimate -----

def test_kl_estimate_mean_over_pairs():
    kl = t([-1.0, -1.0], [-2.0, -1.0], [-1.0, -1.0])
    ref = t([-2.0, -1.0], [-1.0, -1.0], [-1.5, -1.0])
    # r = [1, -1, 0.5] -> mean 0.5 / 3
    z0 = kl_estimate(kl, ref, distributed=False)
    assert z0.item() == pytest.approx(0.5 / 3)
    assert z0.ndim == 0


def test_kl_estimate_clamped_at_zero():
    kl = t([-2.0, -1.0], [-1.0, -1.0])
    ref = t([-1.0, -1.0], [-1.0, -0.5])
    # r = [-1, -0.5] -> mean -0.75 -> 0
    assert kl_estimate(kl, ref, distributed=False).item() == 0.0


def test_kl_estimate_is_detached():
    kl = t([-0.1, -0.2], [-0.3, -0.1]).requires_grad_(True)
    ref = t([-1.0, -1.0], [-1.0, -1.0])
    z0 = kl_estimate(kl, ref, distributed=False)
    assert not z0.requires_grad
    assert z0.item() == pytest.approx((1.7 + 1.6) / 2)
    # used in a loss, no gradient reaches the KL log-probs
    r = t([0.5]).requires_grad_(True)
    apo_loss(r, torch.tensor([True]), z0, beta=1.0).backward()
    assert r.grad is not None and kl.grad is None


def test_kl_estimate_autodetects_no_distributed():
    kl = t([-1.0], [-1.0])
    ref = t([-2.0], [-1.0])
    assert kl_estimate(kl, ref).item() == pytest.approx(0.5)


# ----- batch_normalized -----

def test_batch_normalized_average_one():
    w = batch_normalized(torch.tensor([1.0, 2.0, 3.0, 6.0]))
    torch.testing.assert_close(w, torch.tensor([1 / 3, 2 / 3, 1.0, 2.0]))
    assert w.mean().item() == pytest.approx(1.0)


def test_batch_normalized_abs_empty_and_detached():
    torch.testing.assert_close(batch_normalized(torch.tensor([-1.0, 1.0, -2.0])), torch.tensor([0.75, 0.75, 1.5]))
    assert batch_normalized(torch.empty(0)).numel() == 0
    e = torch.tensor([1.0, 3.0], requires_grad=True)
    assert not batch_normalized(e).requires_grad
    # all zero errors: no division by zero
    torch.testing.assert_close(batch_normalized(torch.zeros(3)), torch.zeros(3))


# ----- adaptive_weights -----

def test_adaptive_weights_hand_worked():
    errors = torch.tensor([1.0, 3.0, 2.0, 6.0, float("nan")])
    desirable = torch.tensor([True, True, False, False, True])
    lam = adaptive_weights(errors, desirable, beta_d=2.0, beta_u=0.5)
    # normalized within each group: desirable [1, 3] -> [0.5, 1.5]; undesirable [2, 6] -> [0.5, 1.5]
    expect = torch.tensor([
        1 - math.exp(-2.0 * 0.5), 1 - math.exp(-2.0 * 1.5),
        math.exp(-0.5 * 0.5), math.exp(-0.5 * 1.5),
        1.0,  # NaN error -> weight 1
    ])
    torch.testing.assert_close(lam, expect)
    assert lam.dtype == torch.float32


def test_adaptive_weights_direction():
    # desirable: larger error -> larger weight; undesirable: larger error -> smaller weight
    errors = torch.tensor([1.0, 2.0, 1.0, 2.0])
    desirable = torch.tensor([1, 1, 0, 0])  # any integer/bool mask
    lam = adaptive_weights(errors, desirable, 1.0, 1.0)
    assert lam[1] > lam[0] and lam[3] < lam[2]
    w = [2 / 3, 4 / 3]
    torch.testing.assert_close(lam, torch.tensor([1 - math.exp(-w[0]), 1 - math.exp(-w[1]), math.exp(-w[0]), math.exp(-w[1])]))


def test_adaptive_weights_single_group_and_inf():
    lam = adaptive_weights(torch.tensor([2.0, float("inf"), 4.0]), torch.tensor([False, False, False]), 1.0, 3.0)
    # finite undesirable [2, 4] -> w [2/3, 4/3]; inf -> 1
    torch.testing.assert_close(lam, torch.tensor([math.exp(-2.0), 1.0, math.exp(-4.0)]))


# ----- prospect_utility / apo_loss -----

R = torch.tensor([1.0, -0.5, 0.2])
D = torch.tensor([True, False, False])
Z0 = torch.tensor(0.3)


def test_prospect_utility_hand_worked():
    v = prospect_utility(R, D, Z0, beta=2.0)
    # desirable: sigma(2 (1 - 0.3)); undesirable: sigma(2 (0.3 + 0.5)), sigma(2 (0.3 - 0.2))
    torch.testing.assert_close(v, torch.tensor([sig(1.4), sig(1.6), sig(0.2)]))
    w = torch.tensor([0.5, 1.0, 2.0])
    torch.testing.assert_close(prospect_utility(R, D, Z0, 2.0, w), torch.tensor([0.5 * sig(1.4), sig(1.6), 2 * sig(0.2)]))


def test_apo_loss_hand_worked():
    w = torch.tensor([0.5, 1.0, 2.0])
    expect = -(0.5 * sig(1.4) + sig(1.6) + 2 * sig(0.2)) / 3
    assert apo_loss(R, D, Z0, 2.0, w).item() == pytest.approx(expect, rel=1e-6)
    assert apo_loss(R, D, Z0, 2.0).item() == pytest.approx(-(sig(1.4) + sig(1.6) + sig(0.2)) / 3, rel=1e-6)
    # at initialization (r = 0, z0 = 0) the loss is -sigma(0) = -0.5
    assert apo_loss(torch.zeros(4), torch.tensor([1, 0, 1, 0]), torch.tensor(0.0), 0.1).item() == pytest.approx(-0.5)


def test_apo_loss_gradient_hand_worked():
    r = R.clone().requires_grad_(True)
    w = torch.tensor([0.5, 1.0, 2.0])
    apo_loss(r, D, Z0, 2.0, w).backward()
    # dL/dr_i = -(1/B) w_i beta s_i (1 - s_i) * (+1 desirable, -1 undesirable)
    g = [-(1 / 3) * 0.5 * 2 * sig(1.4) * (1 - sig(1.4)),
         +(1 / 3) * 1.0 * 2 * sig(1.6) * (1 - sig(1.6)),
         +(1 / 3) * 2.0 * 2 * sig(0.2) * (1 - sig(0.2))]
    torch.testing.assert_close(r.grad, torch.tensor(g))


# ----- dpo_loss -----

def test_dpo_loss_hand_worked():
    chosen, rejected = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    expect = -(math.log(sig(0.5)) + math.log(sig(-0.5))) / 2
    assert dpo_loss(chosen, rejected, beta=0.5).item() == pytest.approx(expect, rel=1e-6)
    assert dpo_loss(torch.tensor([2.0]), torch.tensor([-1.0]), 0.1).item() == pytest.approx(-math.log(sig(0.3)), rel=1e-6)
    # equal rewards: log 2
    assert dpo_loss(torch.zeros(3), torch.zeros(3), 1.0).item() == pytest.approx(math.log(2))


def test_dpo_loss_empty_is_zero_and_differentiable():
    c = torch.empty(0, requires_grad=True)
    loss = dpo_loss(c, torch.empty(0), 0.1)
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()  # no error: a step without correction samples is a valid no-op


# ----- KTO vs an independent plain-Python reimplementation -----

def kto_reference(logp, ref, kl_logp, kl_ref, desirable, beta, skip=None) -> float:
    """Plain floats: r_i = sum_t (logp - ref) (undesirable: tokens in ``skip`` left out),
    z0 = max(0, mean_j sum_t (kl_logp - kl_ref)), v = sigmoid(beta (r - z0)) or sigmoid(beta (z0 - r))."""
    B, N = len(logp), len(logp[0])
    skip = skip or set()
    rs = []
    for i in range(B):
        r = 0.0
        for k in range(N):
            if not desirable[i] and k in skip:
                continue
            r += float(logp[i][k]) - float(ref[i][k])
        rs.append(r)
    kl_r = [sum(float(kl_logp[j][k]) - float(kl_ref[j][k]) for k in range(N)) for j in range(len(kl_logp))]
    z0 = max(0.0, sum(kl_r) / len(kl_r))
    vs = [sig(beta * (rs[i] - z0)) if desirable[i] else sig(beta * (z0 - rs[i])) for i in range(B)]
    return -sum(vs) / B


def test_kto_pure_functions_match_plain_python():
    g = torch.Generator().manual_seed(0)
    for trial in range(5):
        B, N = 7, 6
        logp = -torch.rand(B, N, generator=g) * 3
        ref = -torch.rand(B, N, generator=g) * 3
        kl_logp = -torch.rand(B, N, generator=g) * 3
        kl_ref = -torch.rand(B, N, generator=g) * 3 - (0.5 if trial % 2 else -0.5)  # z0 > 0 and z0 clamped
        desirable = torch.rand(B, generator=g) > 0.4
        loss = apo_loss(sequence_reward(logp, ref), desirable, kl_estimate(kl_logp, kl_ref, distributed=False), 0.7)
        expect = kto_reference(logp.tolist(), ref.tolist(), kl_logp.tolist(), kl_ref.tolist(), desirable.tolist(), 0.7)
        assert loss.item() == pytest.approx(expect, rel=1e-5, abs=1e-6)


# ----- the KTO objective class on a real tiny policy -----

def _tiny_policy(instruction: str, seed: int = 0):
    from apo.data import DatasetStats
    from apo.models import VLAPolicy
    from apo.tokenizers import BinActionTokenizer

    stats = DatasetStats([-1.0] * 4, [1.0] * 4, [0.0] * 4, [1.0] * 4, 10)
    tok = BinActionTokenizer(stats.action_q01, stats.action_q99, n_bins=16, horizon=2)
    torch.manual_seed(seed)
    policy = VLAPolicy.build(tok, stats, image_size=32, image_grid=2, d_model=32, n_layers=1, n_heads=2)
    g = torch.Generator().manual_seed(zlib.crc32(instruction.encode()))
    policy._instructions[instruction] = torch.nn.functional.normalize(torch.randn(384, generator=g), dim=0)
    return policy


@pytest.fixture(scope="module")
def kto_setup():
    from apo.data.dataset import AUTONOMOUS, CORRECTION, EXPERT, UNDESIRABLE

    policy = _tiny_policy("pick it up")
    B = 6
    g = torch.Generator().manual_seed(1)
    chunks = torch.rand(B, 2, 4, generator=g) * 2 - 1
    tokens = torch.from_numpy(policy.tokenizer.encode(chunks.numpy()))
    kl_tokens = tokens.roll(1, 0)
    batch = {
        "image": torch.randint(0, 256, (B, 32, 32, 3), dtype=torch.uint8, generator=g),
        "lang": policy.embed_instructions(["pick it up"] * B),
        "proprio": torch.randn(B, 4, generator=g),
        "chunks": chunks, "tokens": tokens, "kl_tokens": kl_tokens,
        "categories": torch.tensor([EXPERT, UNDESIRABLE, AUTONOMOUS, CORRECTION, UNDESIRABLE, EXPERT]),
        "index": torch.arange(B),
    }
    N = tokens.shape[1]
    batch["ref_logp"] = -torch.rand(B, N, generator=g) * 4
    batch["ref_kl_logp"] = -torch.rand(B, N, generator=g) * 4 - 1.0
    return policy, batch


@pytest.mark.parametrize("exclude_gripper", [False, True])
def test_kto_objective_matches_plain_python(kto_setup, exclude_gripper):
    from apo.objectives.refinement import KTO

    policy, batch = kto_setup
    with torch.no_grad():
        logp = policy.log_prob(batch)  # an independent path: the full forward, not forward_from_prefix
        kl_logp = policy.log_prob(batch, batch["kl_tokens"])
    desirable = (batch["categories"] != 0).tolist()
    skip = set(np.flatnonzero(policy.tokenizer.gripper_token_mask()).tolist()) if exclude_gripper else set()
    expect = kto_reference(logp.tolist(), batch["ref_logp"].tolist(), kl_logp.tolist(), batch["ref_kl_logp"].tolist(),
                           desirable, beta=0.5, skip=skip)
    loss, metrics = KTO(beta=0.5, exclude_gripper=exclude_gripper)(policy, batch)
    assert loss.item() == pytest.approx(expect, rel=1e-5, abs=1e-6)
    assert metrics["loss"] == pytest.approx(expect, rel=1e-5, abs=1e-6)
    assert metrics["kl"] > 0  # the made-up reference KL log-probs are low: z0 is positive, not clamped


# ----- masks and the single-process identity of the global reductions -----

def test_kl_estimate_mask_leaves_out_padding():
    kl = t([-1.0, -1.0], [-2.0, -1.0])
    ref = t([-2.0, -9.0], [-1.0, -1.0])
    # partner 0's second token is padding: r = [1, -1] -> mean 0 -> clamped 0; unmasked it would be 8 - 1
    mask = torch.tensor([[True, False], [True, True]])
    assert kl_estimate(kl, ref, distributed=False, mask=mask).item() == pytest.approx(0.0)
    assert kl_estimate(kl, ref, distributed=False).item() == pytest.approx((9.0 - 1.0) / 2)


def test_batch_normalized_and_dpo_without_process_group_are_local():
    e = torch.tensor([1.0, 3.0])
    torch.testing.assert_close(batch_normalized(e), batch_normalized(e, distributed=False))
    torch.testing.assert_close(batch_normalized(e), torch.tensor([0.5, 1.5]))
    c, r = torch.tensor([1.0, -1.0]), torch.tensor([0.0, 0.0])
    expect = -(math.log(sig(0.5)) + math.log(sig(-0.5))) / 2
    assert dpo_loss(c, r, 0.5).item() == pytest.approx(expect, rel=1e-6)
    assert dpo_loss(c, r, 0.5, distributed=False).item() == pytest.approx(expect, rel=1e-6)
