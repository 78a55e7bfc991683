"""Refinement objectives (APO, KTO, DPO, weighted BC) on a tiny policy and a synthetic batch built
from hand-made episodes (an expert demo and two interaction episodes with labels 0/1/2)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from apo.data.dataset import AUTONOMOUS, CORRECTION, EXPERT, UNDESIRABLE, StepData
from apo.objectives import OBJECTIVES
from apo.objectives.bc import BehaviourCloning
from apo.objectives.preference import adaptive_weights
from apo.objectives.metrics import decoded_l1
from apo.objectives.refinement import APO, DPO, HGDAgger, IWR, KTO, Sirius, WeightedBC
from apo.training.reference import OnlineReference
from unit_policies import INSTRUCTION, fast_tokenizer, random_episode, unit_policy



@pytest.fixture(scope="module")
def policy():
    return unit_policy(0)


@pytest.fixture(scope="module")
def data(policy) -> StepData:
    eps = [
        random_episode([2, 2, 2, 2], seed=1, source="expert"),
        random_episode([1, 1, 0, 0, 2, 2, 1, 1], seed=2),
        random_episode([0, 2, 2, 1], seed=3),
    ]
    return StepData.from_episodes(eps, policy.tokenizer)


@pytest.fixture(scope="module")
def raw_batch(data, policy):
    return data.batch(torch.arange(len(data)), policy.embed_instructions(data.instructions))


def filled(batch, ref_policy, data):
    """A copy of the batch with reference log-probs of ``ref_policy`` (the real OnlineReference)."""
    return OnlineReference(ref_policy, data, seed=0).fill(dict(batch))


@pytest.fixture(scope="module")
def batch(raw_batch, data):
    return filled(raw_batch, unit_policy(seed=7), data)  # a reference different from the policy


def test_synthetic_batch_categories(batch):
    cats = batch["categories"].tolist()
    assert cats == [EXPERT] * 4 + [AUTONOMOUS, AUTONOMOUS, UNDESIRABLE, UNDESIRABLE, CORRECTION, CORRECTION,
                                   AUTONOMOUS, AUTONOMOUS, UNDESIRABLE, CORRECTION, CORRECTION, AUTONOMOUS]
    for k in ("ref_logp", "ref_kl_logp", "ref_policy_logp", "kl_tokens", "policy_tokens"):
        assert batch[k].shape == batch["tokens"].shape, k


# ----- APO: the gripper tokens are left out of the undesirable reward only -----

def test_apo_excludes_exactly_the_gripper_tokens_from_undesirable_reward(policy, batch):
    gripper = torch.from_numpy(policy.tokenizer.gripper_token_mask())
    assert gripper.tolist() == [False, False, False, True] * 2
    obj = APO(beta=0.1)
    _, m0 = obj(policy, batch)

    at_gripper = dict(batch, ref_logp=batch["ref_logp"] + gripper.float())  # ref +1 at gripper tokens only
    _, m1 = obj(policy, at_gripper)
    assert m1["rewards/undesirable"] == pytest.approx(m0["rewards/undesirable"], abs=1e-6)
    assert m1["rewards/desirable"] == pytest.approx(m0["rewards/desirable"] - 2.0, abs=1e-5)  # 2 gripper tokens

    elsewhere = dict(batch, ref_logp=batch["ref_logp"] + (~gripper).float())  # ref +1 at the 6 other tokens
    _, m2 = obj(policy, elsewhere)
    assert m2["rewards/undesirable"] == pytest.approx(m0["rewards/undesirable"] - 6.0, abs=1e-5)
    assert m2["rewards/desirable"] == pytest.approx(m0["rewards/desirable"] - 8.0 + 2.0, abs=1e-5)

    # without the exclusion the undesirable reward sees the gripper too
    _, m3 = APO(beta=0.1, exclude_gripper=False)(policy, at_gripper)
    _, m4 = APO(beta=0.1, exclude_gripper=False)(policy, batch)
    assert m3["rewards/undesirable"] == pytest.approx(m4["rewards/undesirable"] - 2.0, abs=1e-5)


def test_apo_rewards_are_log_ratios(policy, batch):
    _, m = APO(exclude_gripper=False)(policy, batch)
    with torch.no_grad():
        r = (policy.log_prob(batch) - batch["ref_logp"]).sum(1)
    des = batch["categories"] != UNDESIRABLE
    assert m["rewards/desirable"] == pytest.approx(r[des].mean().item(), abs=1e-5)
    assert m["rewards/undesirable"] == pytest.approx(r[~des].mean().item(), abs=1e-5)
    assert m["margins"] == pytest.approx(r[des].mean().item() - r[~des].mean().item(), abs=1e-5)


# ----- at initialization (reference == policy) -----

@pytest.fixture(scope="module")
def init_batch(policy, raw_batch, data):
    return filled(raw_batch, copy.deepcopy(policy), data)


def test_at_init_rewards_zero_and_kto_loss_minus_half(policy, init_batch):
    loss, m = KTO()(policy, init_batch)
    assert m["rewards/desirable"] == pytest.approx(0.0, abs=1e-5)
    assert m["rewards/undesirable"] == pytest.approx(0.0, abs=1e-5)
    assert m["kl"] == pytest.approx(0.0, abs=1e-5)
    assert loss.item() == pytest.approx(-0.5, abs=1e-6)
    assert m["weights/desirable"] == 1.0 and m["weights/undesirable"] == 1.0


def test_at_init_apo_loss_is_minus_half_mean_weight(policy, init_batch):
    obj = APO(beta=0.1, beta_d=2.0, beta_u=0.5)
    loss, m = obj(policy, init_batch)
    with torch.no_grad():
        errors = decoded_l1(policy.logits(init_batch), init_batch["chunks"], policy.tokenizer)
    des = init_batch["categories"] != UNDESIRABLE
    lam = adaptive_weights(errors, des, 2.0, 0.5)
    assert loss.item() == pytest.approx(-0.5 * lam.mean().item(), abs=1e-6)
    assert m["weights/desirable"] == pytest.approx(lam[des].mean().item(), abs=1e-6)
    # hand check of one desirable and one undesirable weight
    w_d = errors[des] / errors[des].mean()
    w_u = errors[~des] / errors[~des].mean()
    assert lam[des][0].item() == pytest.approx(1 - math.exp(-2.0 * w_d[0].item()), rel=1e-5)
    assert lam[~des][0].item() == pytest.approx(math.exp(-0.5 * w_u[0].item()), rel=1e-5)


# ----- KTO == APO without adaptive weights -----

def test_kto_equals_apo_without_adaptive_weights(policy, batch):
    kto_loss, _ = KTO(beta=0.3)(policy, batch)
    apo_plain, _ = APO(beta=0.3, adaptive=False)(policy, batch)
    apo_adaptive, _ = APO(beta=0.3, adaptive=True)(policy, batch)
    assert kto_loss.item() == pytest.approx(apo_plain.item(), abs=1e-7)
    assert apo_adaptive.item() != pytest.approx(kto_loss.item(), abs=1e-4)


@pytest.mark.parametrize("cls", [APO, KTO])
def test_anchor_adds_the_cross_entropy_of_the_expert_steps(policy, batch, cls):
    plain, _ = cls(beta=0.3)(policy, batch)
    anchored, metrics = cls(beta=0.3, anchor_weight=0.5)(policy, batch)
    # independent: mean over the expert steps of the mean token cross-entropy (the bin tokens are all real)
    expert = batch["categories"] == EXPERT
    assert expert.sum() == 4
    logits = policy.logits(batch)[expert]
    ce = F.cross_entropy(logits.flatten(0, 1), batch["tokens"][expert].flatten())
    assert metrics["anchor_nll"] == pytest.approx(ce.item(), rel=1e-5)
    assert anchored.item() == pytest.approx(plain.item() + 0.5 * ce.item(), rel=1e-5)
    assert "anchor_nll" not in cls(beta=0.3)(policy, batch)[1]  # off by default: the paper's loss


def test_from_config_reads_the_refine_config():
    from apo.training.refine import RefineConfig

    cfg = RefineConfig(objective="apo", beta=0.2, beta_d=3.0, beta_u=0.25, kl_samples=4, exclude_gripper=False,
                       anchor_weight=0.7)
    apo = OBJECTIVES.get("apo").from_config(cfg)
    assert (apo.beta, apo.beta_d, apo.beta_u, apo.kl_samples, apo.exclude_gripper, apo.adaptive) == (0.2, 3.0, 0.25, 4, False, True)
    assert apo.anchor_weight == 0.7 and RefineConfig().anchor_weight == 0.0
    kto = OBJECTIVES.get("kto").from_config(cfg)
    assert isinstance(kto, KTO) and not kto.adaptive and kto.beta == 0.2 and kto.kl_samples == 4
    assert kto.anchor_weight == 0.7
    assert OBJECTIVES.get("dpo").from_config(cfg).beta == 0.2


def test_kl_samples_subsample_the_batch(policy, batch):
    # B = 16, kl_samples = 4: z0 uses every 4th sample (0, 4, 8, 12) with its KL partner's tokens
    b = dict(batch, ref_kl_logp=batch["ref_kl_logp"] - torch.linspace(0, 3, len(batch["tokens"]))[:, None])
    _, m = KTO(kl_samples=4)(policy, b)
    sub = torch.tensor([0, 4, 8, 12])
    with torch.no_grad():
        kl = policy.log_prob({k: v[sub] for k, v in b.items()}, b["kl_tokens"][sub])
    expect = (kl - b["ref_kl_logp"][sub]).sum(1).mean().item()
    assert expect > 0  # not clamped: the check sees which pairs were used
    assert m["kl"] == pytest.approx(expect, abs=1e-5)
    _, m_all = KTO(kl_samples=16)(policy, b)
    with torch.no_grad():
        kl_all = policy.log_prob(b, b["kl_tokens"])
    assert m_all["kl"] == pytest.approx((kl_all - b["ref_kl_logp"]).sum(1).mean().item(), abs=1e-5)


# ----- DPO -----

def test_dpo_uses_only_correction_samples(policy, batch):
    obj = DPO(beta=0.5)
    loss, m = obj(policy, batch)
    sel = batch["categories"] == CORRECTION
    assert m["pairs"] == float(sel.sum()) == 4.0
    # hand computation on the correction samples only
    with torch.no_grad():
        sub = {k: v[sel] for k, v in batch.items()}
        r_c = (policy.log_prob(sub) - sub["ref_logp"]).sum(1)
        r_r = (policy.log_prob(sub, sub["policy_tokens"]) - sub["ref_policy_logp"]).sum(1)
    expect = sum(-math.log(1 / (1 + math.exp(-0.5 * (c - r)))) for c, r in zip(r_c.tolist(), r_r.tolist())) / 4
    assert loss.item() == pytest.approx(expect, rel=1e-5)
    # changing anything about the other samples leaves the loss unchanged
    other = ~sel
    changed = {k: v.clone() for k, v in batch.items()}
    changed["ref_logp"][other] -= 3.0
    changed["ref_policy_logp"][other] += 3.0
    changed["image"][other] = 255 - changed["image"][other]
    changed["policy_tokens"][other] = (changed["policy_tokens"][other] + 5) % 16
    assert obj(policy, changed)[0].item() == pytest.approx(loss.item(), abs=1e-6)
    # changing a correction sample's rejected reference does change it
    changed["ref_policy_logp"][sel] += 1.0
    assert obj(policy, changed)[0].item() != pytest.approx(loss.item(), abs=1e-4)


def test_dpo_without_corrections_and_without_proposals(policy, batch):
    no_corr = dict(batch, categories=torch.where(batch["categories"] == CORRECTION, AUTONOMOUS, batch["categories"]))
    loss, m = DPO()(policy, no_corr)
    assert loss.item() == 0.0 and m["pairs"] == 0.0
    loss.backward()  # a valid no-op step
    with pytest.raises(ValueError, match="proposed actions"):
        DPO()(policy, {k: v for k, v in batch.items() if k != "policy_tokens"})


# ----- weighted BC baselines -----

CATS = torch.tensor([UNDESIRABLE, AUTONOMOUS, CORRECTION, EXPERT, CORRECTION, EXPERT, EXPERT, AUTONOMOUS])


def cfg():
    from apo.training.refine import RefineConfig

    return RefineConfig()


def test_hg_dagger_weights():
    w = OBJECTIVES.get("hg-dagger").from_config(cfg()).sample_weights(CATS)
    assert w.tolist() == [0, 0, 1, 1, 1, 1, 1, 0]


def test_iwr_weights_corrections_half():
    w = OBJECTIVES.get("iwr").from_config(cfg()).sample_weights(CATS)
    corr = CATS == CORRECTION
    assert w[corr].sum().item() == pytest.approx(0.5)
    assert w[~corr].sum().item() == pytest.approx(0.5)
    torch.testing.assert_close(w, torch.tensor([1 / 12, 1 / 12, 0.25, 1 / 12, 0.25, 1 / 12, 1 / 12, 1 / 12]))
    # no correction in the batch: the rest still gets 0.5 in total, nothing divides by zero
    w = IWR.from_config(cfg()).sample_weights(torch.tensor([EXPERT, AUTONOMOUS]))
    torch.testing.assert_close(w, torch.tensor([0.25, 0.25]))


def test_sirius_weights():
    w = OBJECTIVES.get("sirius").from_config(cfg()).sample_weights(CATS)
    torch.testing.assert_close(w, torch.tensor([0.1, 1.0, 2.0, 1.0, 2.0, 1.0, 1.0, 1.0]))


def test_weighted_bc_types():
    assert isinstance(OBJECTIVES.get("hg-dagger").from_config(cfg()), HGDAgger)
    assert isinstance(OBJECTIVES.get("sirius").from_config(cfg()), Sirius)
    assert issubclass(IWR, WeightedBC)


def test_hg_dagger_loss_is_bc_on_expert_and_corrections(policy, batch):
    loss, _ = HGDAgger()(policy, batch)
    keep = (batch["categories"] == EXPERT) | (batch["categories"] == CORRECTION)
    bc, _ = BehaviourCloning()(policy, {k: v[keep] for k, v in batch.items()})
    assert loss.item() == pytest.approx(bc.item(), rel=1e-5)


def test_sirius_loss_hand_weighted(policy, batch):
    loss, _ = Sirius.from_config(cfg())(policy, batch)
    with torch.no_grad():
        nll = -policy.log_prob(batch).mean(1)
    table = {UNDESIRABLE: 0.1, AUTONOMOUS: 1.0, CORRECTION: 2.0, EXPERT: 1.0}
    w = [table[c] for c in batch["categories"].tolist()]
    expect = sum(wi * li for wi, li in zip(w, nll.tolist())) / sum(w)
    assert loss.item() == pytest.approx(expect, rel=1e-5)


# ----- gradients flow -----

@pytest.mark.parametrize("name", ["apo", "kto", "dpo", "hg-dagger", "iwr", "sirius", "bc"])
def test_gradients_flow(name, batch, init_batch):
    p = unit_policy(0)
    obj = OBJECTIVES.get(name).from_config(cfg()) if name != "bc" else BehaviourCloning()
    for b in (batch, init_batch):  # also at initialization (r = 0: sigma'(0) > 0)
        p.zero_grad(set_to_none=True)
        loss, metrics = obj(p, b)
        assert torch.isfinite(loss) and loss.requires_grad
        loss.backward()
        head = p.model.head.weight.grad
        assert head is not None and torch.isfinite(head).all() and head.abs().sum() > 0
        assert p.model.image_encoder.net[0].weight.grad.abs().sum() > 0
        assert metrics["loss"] == pytest.approx(loss.item())


def test_apo_step_improves_its_objective(batch):
    """One small gradient step lowers the APO loss on the same batch."""
    p = unit_policy(0)
    obj = APO(beta=1.0)
    loss0, _ = obj(p, batch)
    opt = torch.optim.SGD(p.parameters(), lr=0.05)
    loss0.backward()
    opt.step()
    loss1, _ = obj(p, batch)
    assert loss1.item() < loss0.item()


# ----- every objective with FAST tokens (variable length: padding must not count) -----

def fast_episodes():
    return [
        random_episode([2, 2, 2, 2], seed=1, source="expert"),
        random_episode([1, 1, 0, 0, 2, 2, 1, 1], seed=2),
        random_episode([0, 2, 2, 1], seed=3),
    ]


@pytest.fixture(scope="module")
def fast_setup():
    tok = fast_tokenizer(fast_episodes())
    policy = unit_policy(0, tok)
    data = StepData.from_episodes(fast_episodes(), policy.tokenizer)
    raw = data.batch(torch.arange(len(data)), policy.embed_instructions(data.instructions))
    batch = filled(raw, unit_policy(7, tok), data)
    tok = policy.tokenizer
    valid = tok.token_mask(batch["tokens"])
    assert (~valid).any() and valid.sum(1).min() < valid.shape[1]  # there is padding to get wrong
    return policy, batch


def test_fast_padding_adds_nothing_to_rewards_kl_or_loss(fast_setup):
    policy, batch = fast_setup
    tok = policy.tokenizer
    pad = ~tok.token_mask(batch["tokens"])
    kl_pad = ~tok.token_mask(batch["kl_tokens"])
    for obj in (APO(beta=0.5, kl_samples=16), KTO(beta=0.5, kl_samples=16)):
        loss0, m0 = obj(policy, batch)
        shifted = dict(batch, ref_logp=batch["ref_logp"] - 5.0 * pad, ref_kl_logp=batch["ref_kl_logp"] - 5.0 * kl_pad)
        loss1, m1 = obj(policy, shifted)
        assert loss1.item() == pytest.approx(loss0.item(), abs=1e-6)
        for k in ("rewards/desirable", "rewards/undesirable", "kl"):
            assert m1[k] == pytest.approx(m0[k], abs=1e-5), k
        # the same shift at real tokens does change them
        real = dict(batch, ref_logp=batch["ref_logp"] - 1.0 * ~pad)
        assert obj(policy, real)[1]["rewards/desirable"] == pytest.approx(
            m0["rewards/desirable"] + (~pad)[batch["categories"] != UNDESIRABLE].sum(1).float().mean().item(), abs=1e-4)


def test_fast_apo_rewards_are_masked_log_ratios(fast_setup):
    policy, batch = fast_setup
    tok = policy.tokenizer
    _, m = APO(exclude_gripper=True)(policy, batch)
    with torch.no_grad():
        diff = policy.log_prob(batch) - batch["ref_logp"]
    valid = tok.token_mask(batch["tokens"])
    grip = tok.gripper_token_mask(batch["tokens"])
    des = batch["categories"] != UNDESIRABLE
    r_des = (diff * valid)[des].sum(1)
    r_und = (diff * (valid & ~grip))[~des].sum(1)  # gripper segment (after <grip>, incl. <eos>) left out
    assert grip[~des].any(1).all()
    assert m["rewards/desirable"] == pytest.approx(r_des.mean().item(), abs=1e-5)
    assert m["rewards/undesirable"] == pytest.approx(r_und.mean().item(), abs=1e-5)
    _, m_all = APO(exclude_gripper=False)(policy, batch)
    assert m_all["rewards/undesirable"] == pytest.approx((diff * valid)[~des].sum(1).mean().item(), abs=1e-5)


def test_fast_undecodable_greedy_sequences_get_weight_one(fast_setup):
    policy, batch = fast_setup
    tok = policy.tokenizer
    # teacher-forced argmax = the label tokens, except for samples 1 and 4 whose <eos> is replaced by padding
    greedy = batch["tokens"].clone()
    for i in (1, 4):
        greedy[i][greedy[i] == tok.eos_id] = tok.pad_id
    logits = F.one_hot(greedy, tok.vocab_size).float() * 10
    errors = decoded_l1(logits, batch["chunks"], tok)
    bad = torch.isnan(errors)
    assert bad.nonzero().flatten().tolist() == [1, 4]
    assert (errors[~bad] <= torch.from_numpy(tok.max_error()).max() + 1e-6).all()  # the others decode to the labels
    des = batch["categories"] != UNDESIRABLE
    lam = adaptive_weights(errors, des, 1.0, 1.0)
    assert (lam[bad] == 1.0).all() and (lam[~bad] != 1.0).all()
    # the untrained policy's greedy sequences are all malformed: every weight is 1, so APO is KTO
    loss, m = APO(beta=0.5, kl_samples=16)(policy, batch)
    assert m["undecodable"] == 1.0 and m["weights/desirable"] == m["weights/undesirable"] == 1.0
    assert loss.item() == pytest.approx(KTO(beta=0.5, kl_samples=16)(policy, batch)[0].item(), abs=1e-7)


@pytest.mark.parametrize("setup", ["bins", "fast"])
def test_greedy_weight_decode_compares_the_executed_chunk(setup, policy, init_batch, fast_setup):
    pol, batch = (policy, init_batch) if setup == "bins" else fast_setup
    if setup == "fast":  # at init (reference == policy) the loss is -mean(lambda) / 2, as for bins
        batch = filled({k: v for k, v in batch.items() if not k.startswith("ref_")}, copy.deepcopy(pol),
                       StepData.from_episodes(fast_episodes(), pol.tokenizer))
    # the chunks the policy executes for these observations, through its public acting path
    n = len(batch["index"])
    executed = torch.from_numpy(pol.act_batch(batch["image"].numpy(), batch["proprio"].numpy(), [INSTRUCTION] * n))
    errors = (executed - batch["chunks"]).abs().flatten(1).mean(1)
    des = batch["categories"] != UNDESIRABLE
    lam = adaptive_weights(errors, des, 2.0, 0.5)
    loss, m = APO(beta=0.1, beta_d=2.0, beta_u=0.5, weight_decode="greedy")(pol, batch)
    assert m["undecodable"] == 0.0  # constrained decoding: every sample gets its adaptive weight
    assert loss.item() == pytest.approx(-0.5 * lam.mean().item(), abs=1e-6)
    assert m["weights/desirable"] == pytest.approx(lam[des].mean().item(), abs=1e-6)
    # the teacher-forced decode gives other weights (for FAST: none, every sequence is malformed)
    _, tf = APO(beta=0.1, beta_d=2.0, beta_u=0.5)(pol, batch)
    assert tf["weights/desirable"] != pytest.approx(m["weights/desirable"], abs=1e-4)


def test_unknown_weight_decode_is_refused():
    from apo.training.refine import RefineConfig

    with pytest.raises(ValueError, match="teacher-forced"):
        APO(weight_decode="greeedy")
    with pytest.raises(ValueError, match="weight_decode"):
        RefineConfig(weight_decode="sampled")
    assert OBJECTIVES.get("apo").from_config(RefineConfig(weight_decode="greedy")).weight_decode == "greedy"


def test_fast_bc_counts_only_real_tokens(fast_setup):
    policy, batch = fast_setup
    loss, m = BehaviourCloning()(policy, batch)
    with torch.no_grad():
        nll = -policy.log_prob(batch)
    valid = policy.tokenizer.token_mask(batch["tokens"]).float()
    expect = ((nll * valid).sum(1) / valid.sum(1)).mean()
    assert loss.item() == pytest.approx(expect.item(), rel=1e-5)
    assert loss.item() != pytest.approx(nll.mean().item(), rel=1e-3)  # which is what ignoring the mask gives
    w_loss, _ = Sirius.from_config(cfg())(policy, batch)
    table = {UNDESIRABLE: 0.1, AUTONOMOUS: 1.0, CORRECTION: 2.0, EXPERT: 1.0}
    w = torch.tensor([table[c] for c in batch["categories"].tolist()])
    per = (nll * valid).sum(1) / valid.sum(1)
    assert w_loss.item() == pytest.approx(((w * per).sum() / w.sum()).item(), rel=1e-5)


def test_fast_dpo_ignores_padding(fast_setup):
    policy, batch = fast_setup
    tok = policy.tokenizer
    loss0, _ = DPO(beta=0.5)(policy, batch)
    pad_c, pad_r = ~tok.token_mask(batch["tokens"]), ~tok.token_mask(batch["policy_tokens"])
    shifted = dict(batch, ref_logp=batch["ref_logp"] + 3.0 * pad_c, ref_policy_logp=batch["ref_policy_logp"] - 3.0 * pad_r)
    assert DPO(beta=0.5)(policy, shifted)[0].item() == pytest.approx(loss0.item(), abs=1e-6)


@pytest.mark.parametrize("name", ["apo", "kto", "dpo", "hg-dagger", "iwr", "sirius", "bc"])
def test_fast_gradients_flow(name, fast_setup):
    _, batch = fast_setup
    p = unit_policy(0, fast_tokenizer(fast_episodes()))
    obj = OBJECTIVES.get(name).from_config(cfg()) if name != "bc" else BehaviourCloning()
    loss, metrics = obj(p, batch)
    assert torch.isfinite(loss) and loss.requires_grad
    loss.backward()
    assert p.model.head.weight.grad.abs().sum() > 0
    assert metrics["loss"] == pytest.approx(loss.item())
