"""Behaviour cloning: weighted token NLL on hand-worked numbers, the BC objective, shared metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from apo.objectives import OBJECTIVES, BehaviourCloning, weighted_token_nll
from apo.objectives.metrics import decoded_l1, token_accuracy
from apo.tokenizers import BinActionTokenizer

# 2 samples, 2 tokens, vocab 3; logits are log-probabilities so the NLLs are easy to write down
LOGITS = torch.tensor([
    [[0.0, 0.0, 0.0], [math.log(0.5), math.log(0.25), math.log(0.25)]],
    [[math.log(0.1), math.log(0.2), math.log(0.7)], [0.0, 0.0, 0.0]],
])
TARGETS = torch.tensor([[1, 0], [2, 0]])
# sample 0: -log(1/3), -log(0.5); sample 1: -log(0.7), -log(1/3)
S0 = (math.log(3) + math.log(2)) / 2
S1 = (-math.log(0.7) + math.log(3)) / 2


def test_unweighted_is_mean_of_per_sample_means():
    loss = weighted_token_nll(LOGITS, TARGETS)
    assert loss.item() == pytest.approx((S0 + S1) / 2, rel=1e-6)


def test_weighted_hand_worked():
    loss = weighted_token_nll(LOGITS, TARGETS, torch.tensor([1.0, 3.0]))
    assert loss.item() == pytest.approx((1 * S0 + 3 * S1) / 4, rel=1e-6)
    only_second = weighted_token_nll(LOGITS, TARGETS, torch.tensor([0.0, 2.0]))
    assert only_second.item() == pytest.approx(S1, rel=1e-6)


def test_unit_weights_give_plain_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, 11, generator=g)
    targets = torch.randint(0, 11, (5, 7), generator=g)
    ce = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1))
    torch.testing.assert_close(weighted_token_nll(logits, targets, torch.ones(5)), ce)
    torch.testing.assert_close(weighted_token_nll(logits, targets), ce)


def test_weights_scale_invariance_and_zero_weights():
    w = torch.tensor([0.3, 1.7])
    torch.testing.assert_close(weighted_token_nll(LOGITS, TARGETS, w), weighted_token_nll(LOGITS, TARGETS, 10 * w))
    zero = weighted_token_nll(LOGITS, TARGETS, torch.zeros(2))
    assert torch.isfinite(zero) and zero.item() == 0.0


def test_gradient_flows_only_through_weighted_samples():
    logits = LOGITS.clone().requires_grad_(True)
    weighted_token_nll(logits, TARGETS, torch.tensor([0.0, 1.0])).backward()
    assert logits.grad[0].abs().max() == 0
    assert logits.grad[1].abs().max() > 0


@pytest.mark.parametrize("shape", [(3,), (2, 1), (1,), ()])
def test_bad_weight_shape(shape):
    with pytest.raises(ValueError, match="weights must be"):
        weighted_token_nll(LOGITS, TARGETS, torch.ones(shape))


def test_token_accuracy_hand_worked():
    logits = torch.zeros(2, 2, 3)
    logits[0, 0, 1] = logits[0, 1, 0] = logits[1, 0, 2] = logits[1, 1, 1] = 1.0  # argmax: [[1, 0], [2, 1]]
    assert token_accuracy(logits, TARGETS) == pytest.approx(0.75)


def test_decoded_l1_hand_worked():
    tok = BinActionTokenizer([-1.0], [1.0], n_bins=4, horizon=2, gripper_dim=None)  # centres -.75 -.25 .25 .75
    logits = torch.zeros(2, 2, 4)
    logits[0, 0, 0] = logits[0, 1, 3] = 1.0  # decodes to [-0.75, 0.75]
    logits[1, 0, 2] = logits[1, 1, 2] = 1.0  # decodes to [0.25, 0.25]
    chunks = torch.tensor([[[-0.75], [0.25]], [[0.0], [1.0]]])
    np.testing.assert_allclose(decoded_l1(logits, chunks, tok).numpy(), [0.25, 0.5], rtol=1e-6)


def test_bc_objective(tiny_policy, tiny_batch):
    assert OBJECTIVES.get("bc") is BehaviourCloning
    loss, metrics = BehaviourCloning()(tiny_policy, tiny_batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.requires_grad
    assert set(metrics) == {"loss", "token_acc", "l1"}
    assert metrics["loss"] == pytest.approx(loss.item())
    assert 0.0 <= metrics["token_acc"] <= 1.0 and metrics["l1"] >= 0.0
    # it is the plain token cross-entropy of the policy's logits
    logits = tiny_policy.logits(tiny_batch)
    expected = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tiny_batch["tokens"].reshape(-1))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # an untrained policy is near-uniform over the vocabulary
    assert abs(loss.item() - math.log(tiny_policy.config.vocab_size)) < 1.0
    loss.backward()
    assert tiny_policy.model.head.weight.grad.abs().sum() > 0


# ----- masks (padding of variable-length tokenizers) -----

def test_mask_averages_over_real_tokens_only():
    mask = torch.tensor([[True, False], [True, True]])
    loss = weighted_token_nll(LOGITS, TARGETS, mask=mask)
    assert loss.item() == pytest.approx((math.log(3) + S1) / 2, rel=1e-6)  # sample 0: only its first token
    w = weighted_token_nll(LOGITS, TARGETS, torch.tensor([1.0, 3.0]), mask=mask)
    assert w.item() == pytest.approx((1 * math.log(3) + 3 * S1) / 4, rel=1e-6)
    torch.testing.assert_close(weighted_token_nll(LOGITS, TARGETS, mask=torch.ones(2, 2, dtype=torch.bool)),
                               weighted_token_nll(LOGITS, TARGETS))
    # the masked position gets no gradient
    logits = LOGITS.clone().requires_grad_(True)
    weighted_token_nll(logits, TARGETS, mask=mask).backward()
    assert logits.grad[0, 1].abs().max() == 0 and logits.grad[0, 0].abs().max() > 0
    with pytest.raises(ValueError, match="mask must be"):
        weighted_token_nll(LOGITS, TARGETS, mask=torch.ones(2, 3, dtype=torch.bool))


def test_token_accuracy_with_mask():
    logits = torch.zeros(2, 2, 3)
    logits[0, 0, 1] = logits[0, 1, 0] = logits[1, 0, 2] = logits[1, 1, 1] = 1.0  # argmax: [[1, 0], [2, 1]]
    assert token_accuracy(logits, TARGETS, torch.tensor([[True, True], [True, False]])) == pytest.approx(1.0)
    assert token_accuracy(logits, TARGETS, torch.tensor([[False, False], [False, True]])) == pytest.approx(0.0)
    assert math.isnan(token_accuracy(logits, TARGETS, torch.zeros(2, 2, dtype=torch.bool)))
