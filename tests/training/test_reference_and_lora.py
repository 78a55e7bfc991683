"""Reference log-probs (cached vs online), KL partners, LoRA adapters and refine() end to end,
on tiny policies and hand-made episodes (no simulator)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from apo.data import DatasetStats, EpisodeWriter, load_episodes
from apo.data.dataset import StepData
from apo.objectives.refinement import APO
from apo.registry import UnknownNameError
from apo.training.reference import CachedReference, OnlineReference, assign_kl_partners
from apo.training.refine import RefineConfig, refine
from apo.training.trainer import TrainConfig
from unit_policies import INSTRUCTION, random_episode, unit_policy



def interaction_episodes():
    return [random_episode([1, 1, 0, 0, 2, 2, 1, 1], seed=2), random_episode([0, 2, 2, 1, 1, 0, 2, 1], seed=3)]


def demo_episodes():
    return [random_episode([2] * 6, seed=1, source="expert"), random_episode([2] * 5, seed=4, source="expert")]


@pytest.fixture(scope="module")
def data() -> StepData:
    return StepData.from_episodes(demo_episodes() + interaction_episodes(), unit_policy().tokenizer)


def batch_of(data, policy, idx):
    return data.batch(torch.as_tensor(idx), policy.embed_instructions(data.instructions))


# ----- KL partners -----

def test_kl_partners_come_from_another_random_episode():
    ep = torch.tensor([0] * 5 + [1] * 5 + [2] * 3 + [3] * 1)
    for seed in range(5):
        p = assign_kl_partners(ep, seed)
        assert p.shape == ep.shape and p.dtype == torch.long
        assert ((p >= 0) & (p < len(ep))).all()
        assert (ep[p] != ep).all(), seed
    assert torch.equal(assign_kl_partners(ep, 3), assign_kl_partners(ep, 3))
    assert not torch.equal(assign_kl_partners(ep, 3), assign_kl_partners(ep, 4))


def test_kl_partners_single_episode_does_not_hang():
    p = assign_kl_partners(torch.zeros(7, dtype=torch.long), 0)
    assert sorted(p.tolist()) == list(range(7))  # just a permutation


# ----- cached vs online reference -----

@pytest.fixture(scope="module")
def ref_policy():
    return unit_policy(seed=11).eval()


def test_cached_and_online_reference_fill_identical_fields_and_apo_loss(data, ref_policy):
    cached = CachedReference.compute(ref_policy, data, seed=4, batch_size=5)  # several scoring batches
    online = OnlineReference(ref_policy, data, seed=4)
    assert torch.equal(cached.partners, online.partners)
    policy = unit_policy(seed=0)
    idx = [13, 0, 7, 25, 4, 18, 9, 21]
    b_cached = cached.fill(batch_of(data, policy, idx))
    b_online = online.fill(batch_of(data, policy, idx))
    keys = {"kl_tokens", "ref_logp", "ref_kl_logp", "ref_policy_logp"}
    assert keys <= set(b_cached) and keys <= set(b_online)
    assert torch.equal(b_cached["kl_tokens"], b_online["kl_tokens"])
    assert torch.equal(b_cached["kl_tokens"], data.tokens[cached.partners[torch.tensor(idx)]])
    for k in keys - {"kl_tokens"}:
        torch.testing.assert_close(b_cached[k], b_online[k], atol=1e-5, rtol=1e-5)
        assert not b_cached[k].requires_grad and not b_online[k].requires_grad
    # the fields are the reference's own log-probs of the step's tokens
    with torch.no_grad():
        torch.testing.assert_close(b_online["ref_logp"], ref_policy.log_prob(b_online), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b_cached["ref_kl_logp"], ref_policy.log_prob(b_cached, b_cached["kl_tokens"]),
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b_cached["ref_policy_logp"], ref_policy.log_prob(b_cached, b_cached["policy_tokens"]),
                                   atol=1e-5, rtol=1e-5)
    # the objective gives the same loss (and gradient) with either reference
    obj = APO(beta=0.5, kl_samples=4)
    loss_c, m_c = obj(policy, b_cached)
    loss_o, m_o = obj(policy, b_online)
    assert loss_c.item() == pytest.approx(loss_o.item(), rel=1e-5, abs=1e-6)
    assert m_c["kl"] == pytest.approx(m_o["kl"], abs=1e-5)
    assert m_c["rewards/desirable"] != 0.0  # the reference differs from the policy: a non-trivial check


def test_cached_reference_save_and_load_if_matching(data, ref_policy, tmp_path):
    cached = CachedReference.compute(ref_policy, data, seed=0)
    path = tmp_path / "reference_cache.pt"
    assert CachedReference.load_if_matching(path, data) is None  # nothing saved yet
    cached.save(path)
    loaded = CachedReference.load_if_matching(path, data)
    assert loaded is not None
    assert torch.equal(loaded.partners, cached.partners) and torch.equal(loaded.tokens, cached.tokens)
    assert loaded.fields.keys() == cached.fields.keys()
    for k in cached.fields:
        assert torch.equal(loaded.fields[k], cached.fields[k])
    tok = unit_policy().tokenizer
    # a different dataset (same size, other actions) and a different size: recompute
    other_same_size = StepData.from_episodes(demo_episodes() + [random_episode([1, 1, 0, 0, 2, 2, 1, 1], seed=9),
                                                                random_episode([0, 2, 2, 1, 1, 0, 2, 1], seed=3)], tok)
    assert len(other_same_size) == len(data)
    assert CachedReference.load_if_matching(path, other_same_size) is None
    assert CachedReference.load_if_matching(path, StepData.from_episodes(interaction_episodes(), tok)) is None
    # the same steps but another training seed's KL partners: recompute
    assert CachedReference.load_if_matching(path, data, seed=0) is not None
    assert not torch.equal(assign_kl_partners(data.episode_ids, 1), cached.partners)
    assert CachedReference.load_if_matching(path, data, seed=1) is None
    # a cache cut short (a kill mid-write of an older, non-atomic save) is scored again, not a crash
    assert not path.with_name(path.name + ".tmp").exists()  # the atomic write left no temporary file
    path.write_bytes(path.read_bytes()[:100])
    assert CachedReference.load_if_matching(path, data) is None


# ----- LoRA -----

def test_lora_trains_only_adapters_and_merge_preserves_outputs(data, ref_policy):
    from apo.models import TinyVLA
    from apo.models.lora import add_lora, has_lora, merge_lora

    policy = unit_policy(seed=0)
    reference = OnlineReference(copy.deepcopy(policy), data, seed=0)
    base_state = {k: v.clone() for k, v in policy.model.state_dict().items()}
    params = add_lora(policy, rank=4, alpha=8.0)
    assert has_lora(policy)
    names = {n for n, p in policy.model.named_parameters() if p.requires_grad}
    assert names and all("lora_" in n for n in names)
    assert len(params) == len(names)
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}

    opt = torch.optim.AdamW(params, lr=1e-2)
    obj = APO(beta=1.0, kl_samples=4)
    for step in range(3):
        b = reference.fill(batch_of(data, policy, [step, 5, 8, 11, 14, 17, 20, 23]))
        loss, _ = obj(policy, b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in policy.model.named_parameters():
        if "lora_" in n:
            assert not torch.equal(p, before[n]), f"LoRA parameter {n} did not change"
        else:
            assert torch.equal(p, before[n]), f"base parameter {n} changed"

    b = reference.fill(batch_of(data, policy, list(range(8))))
    with torch.no_grad():
        adapted = policy.logits(b)
    merge_lora(policy)
    assert not has_lora(policy) and type(policy.model) is TinyVLA
    assert all(p.requires_grad for p in policy.parameters())
    assert set(policy.model.state_dict()) == set(base_state)  # plain TinyVLA keys again
    with torch.no_grad():
        merged = policy.logits(b)
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-5)
    # and the adapters did something: the merged weights differ from the base
    assert any(not torch.equal(policy.model.state_dict()[k], v) for k, v in base_state.items())


def test_add_lora_rejects_rank_zero():
    from apo.models.lora import add_lora

    with pytest.raises(ValueError, match="rank"):
        add_lora(unit_policy(), rank=0)


# ----- refine() end to end -----

@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("refine")
    inter, demos = root / "interactions", root / "demos"
    for folder, eps in ((inter, interaction_episodes()), (demos, demo_episodes())):
        w = EpisodeWriter(folder)
        for ep in eps:
            w.write(ep)
        DatasetStats.compute(load_episodes(folder)).save(folder)
    base = unit_policy(seed=0).save(root / "base")
    return root, base, inter, demos


def small_cfg(**kw) -> RefineConfig:
    train = TrainConfig(steps=4, batch_size=8, shift_pad=0, lr=1e-3, warmup_steps=1, log_every=1,
                        checkpoint_every=2, threads=1)
    return RefineConfig(**{"train": train, "lora_rank": 4, "lora_alpha": 8.0, "kl_samples": 4, **kw})


def test_refine_end_to_end_writes_a_loadable_policy(folders):
    from apo.models import TinyVLA, VLAPolicy

    root, base, inter, demos = folders
    out = root / "out_apo"
    returned = refine(base, inter, demos, out, small_cfg(objective="apo", demos_per_task=1))
    loaded = VLAPolicy.load(out / "policy")
    assert type(loaded.model) is TinyVLA
    assert INSTRUCTION in loaded._instructions  # deployable without the sentence encoder
    base_policy = VLAPolicy.load(base)
    sd_new, sd_base = loaded.model.state_dict(), base_policy.model.state_dict()
    assert sd_new.keys() == sd_base.keys()
    for k in sd_new:
        torch.testing.assert_close(sd_new[k], returned.model.state_dict()[k])
    assert any(not torch.equal(sd_new[k], sd_base[k]) for k in sd_new), "refinement changed nothing"
    # LoRA touches only the transformer's linear layers: the image encoder and head are the base ones
    for k in sd_new:
        if k.startswith(("image_encoder.", "head.", "token_emb.", "lang_proj.")):
            assert torch.equal(sd_new[k], sd_base[k]), k
    meta = json.loads((out / "refine_config.json").read_text())
    # 1 demo of the task (6 steps) + the 16 interaction steps
    assert meta["steps_per_category"] == {"undesirable": 4, "autonomous": 7, "correction": 5, "expert": 6}
    assert (out / "reference_cache.pt").exists()
    lines = (out / "metrics.jsonl").read_text().strip().splitlines()
    assert len(lines) == 4 and all(np.isfinite(json.loads(line)["loss"]) for line in lines)

    # a second run in the same folder resumes from the final checkpoint (and the cached reference)
    again = refine(base, inter, demos, out, small_cfg(objective="apo", demos_per_task=1))
    for k, v in again.model.state_dict().items():
        torch.testing.assert_close(v, sd_new[k])
    assert len((out / "metrics.jsonl").read_text().strip().splitlines()) == 4


def refine_one_step(folders, name: str, **kw) -> dict:
    """One refinement step on the interaction episodes alone; its refine_config.json."""
    root, base, inter, _ = folders
    cfg = small_cfg(demos_per_task=0, **kw,
                    train=TrainConfig(steps=1, batch_size=8, shift_pad=0, warmup_steps=1, log_every=1, threads=1))
    refine(base, inter, None, root / name, cfg)
    return json.loads((root / name / "refine_config.json").read_text())


@pytest.mark.parametrize("k, counts", [
    (None, {"undesirable": 4, "autonomous": 7}),  # as recorded (K=2)
    (1, {"undesirable": 3, "autonomous": 8}),
    (3, {"undesirable": 7, "autonomous": 4}),
])
def test_refine_relabels_interactions_with_another_k(folders, k, counts):
    meta = refine_one_step(folders, f"out_k{k}", objective="hg-dagger", k_undesirable=k)
    assert meta["steps_per_category"] == {**counts, "correction": 5, "expert": 0}
    assert meta["config"]["k_undesirable"] == k


@pytest.mark.parametrize("mode, autonomous", [("desirable", 7), ("drop", 3)])
def test_refine_drops_policy_steps_before_the_undesirable_window(folders, mode, autonomous):
    # stretches ending in a takeover: steps 0-1 of [1,1,0,0,2,...] and 3-4 of [0,2,2,1,1,0,2,1]
    meta = refine_one_step(folders, f"out_prewindow_{mode}", objective="kto", pre_window_steps=mode)
    assert meta["steps_per_category"] == {"undesirable": 4, "autonomous": autonomous, "correction": 5, "expert": 0}
    assert meta["pre_window_steps"] == 4
    cache = torch.load(folders[0] / f"out_prewindow_{mode}" / "reference_cache.pt", weights_only=False)
    assert len(cache["tokens"]) == 16 - (4 if mode == "drop" else 0)  # only the kept steps were scored


@pytest.mark.parametrize("corrections, undesirable, kept", [
    ("all", "all", {"correction": 5, "undesirable": 4}),
    ("rescued", "all", {"correction": 3, "undesirable": 4}),
    ("all", "rescued", {"correction": 5, "undesirable": 2}),
    ("rescued", "rescued", {"correction": 3, "undesirable": 2}),
])
def test_refine_leaves_out_the_help_and_windows_of_episodes_that_failed_anyway(folders, tmp_path, corrections,
                                                                             undesirable, kept):
    # the first episode (2 person's steps, 2 undesirable) fails, the second (3, 2) succeeds; demos are never left out
    root, base, _, demos = folders
    inter = tmp_path / "interactions"
    w = EpisodeWriter(inter)
    for ep, success in zip(interaction_episodes(), (False, True)):
        ep.success = success
        w.write(ep)
    DatasetStats.compute(load_episodes(inter)).save(inter)
    cfg = small_cfg(demos_per_task=1, objective="kto", corrections=corrections, undesirable=undesirable,
                    train=TrainConfig(steps=1, batch_size=8, shift_pad=0, warmup_steps=1, log_every=1, threads=1))
    refine(base, inter, demos, tmp_path / "out", cfg)
    meta = json.loads((tmp_path / "out" / "refine_config.json").read_text())
    assert meta["steps_per_category"] == {"autonomous": 7, "expert": 6, **kept}
    assert meta["unrescued_person_steps"] == 2 and meta["unrescued_undesirable_steps"] == 2
    cache = torch.load(tmp_path / "out" / "reference_cache.pt", weights_only=False)
    dropped = (5 - kept["correction"]) + (4 - kept["undesirable"])
    assert len(cache["tokens"]) == 6 + 16 - dropped  # only the kept steps were scored


def test_refine_can_leave_out_the_policys_own_steps(folders, tmp_path):
    root, base, inter, demos = folders
    cfg = small_cfg(demos_per_task=1, objective="kto", autonomous="none",
                    train=TrainConfig(steps=1, batch_size=8, shift_pad=0, warmup_steps=1, log_every=1, threads=1))
    refine(base, inter, demos, tmp_path / "out", cfg)
    meta = json.loads((tmp_path / "out" / "refine_config.json").read_text())
    assert meta["steps_per_category"] == {"autonomous": 0, "expert": 6, "correction": 5, "undesirable": 4}
    cache = torch.load(tmp_path / "out" / "reference_cache.pt", weights_only=False)
    assert len(cache["tokens"]) == 6 + 16 - 7  # the 7 autonomous steps were not scored


def test_refine_config_needs_demos_without_the_policys_own_steps():
    with pytest.raises(ValueError, match="demos_per_task > 0"):
        RefineConfig(autonomous="none", demos_per_task=0)
    with pytest.raises(ValueError, match="autonomous must be"):
        RefineConfig(autonomous="some")


def test_refine_rejects_data_rendered_otherwise_than_the_base(folders, tmp_path):
    from apo.envs import EnvConfig
    from apo.models import VLAPolicy

    root, base, inter, _ = folders
    other = VLAPolicy.load(base)
    other.rendering = EnvConfig(goal_pin=True).rendering()
    pinned = tmp_path / "pinned"
    w = EpisodeWriter(pinned)
    for ep in interaction_episodes():
        ep.extras["rendering"] = json.dumps(EnvConfig().rendering())
        w.write(ep)
    DatasetStats.compute(load_episodes(pinned)).save(pinned)
    with pytest.raises(ValueError, match="collect them with the base policy's --env"):
        refine(other.save(tmp_path / "base_pin"), pinned, None, tmp_path / "out", small_cfg(objective="hg-dagger"))


def test_refine_config_rejects_negative_k():
    with pytest.raises(ValueError, match="k_undesirable"):
        RefineConfig(k_undesirable=-1)


def test_refine_full_finetune_online_reference(folders):
    from apo.models import VLAPolicy

    root, base, inter, demos = folders
    out = root / "out_kto"
    cfg = small_cfg(objective="kto", lora_rank=0, reference="online", demos_per_task=0,
                    train=TrainConfig(steps=2, batch_size=8, shift_pad=2, warmup_steps=1, log_every=1, threads=1))
    refine(base, inter, None, out, cfg)
    loaded = VLAPolicy.load(out / "policy")
    assert not (out / "reference_cache.pt").exists()
    # full fine-tuning changes every part, also the image encoder and the head
    base_policy = VLAPolicy.load(base)
    assert not torch.equal(loaded.model.head.weight, base_policy.model.head.weight)
    assert not torch.equal(loaded.model.image_encoder.net[0].weight, base_policy.model.image_encoder.net[0].weight)



def test_refine_is_reproducible_whatever_the_global_rng_state(folders):
    """Same settings and seed -> the same refined policy, also when the process drew random numbers
    before (the LoRA matrices are initialized from the training seed, not from the global state)."""
    root, base, inter, demos = folders
    states = []
    for i, noise in enumerate((123, 456)):
        torch.manual_seed(noise)
        torch.rand(7)
        states.append(refine(base, inter, demos, root / f"repro_{i}", small_cfg(objective="kto", demos_per_task=1))
                      .model.state_dict())
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], rtol=0, atol=0)


@pytest.mark.parametrize("objective", ["hg-dagger", "iwr", "sirius", "bc"])
def test_refine_bc_baselines_skip_reference_scoring(folders, objective):
    from apo.objectives import OBJECTIVES

    root, base, inter, demos = folders
    out = root / f"out_{objective}"
    assert OBJECTIVES.get(objective).uses_reference is False
    refine(base, inter, demos, out, small_cfg(objective=objective, demos_per_task=1, train=TrainConfig(
        steps=2, batch_size=8, shift_pad=0, warmup_steps=1, log_every=1, threads=1)))
    assert (out / "policy" / "config.json").exists()
    assert not (out / "reference_cache.pt").exists()  # no cache scored for an objective that never reads it

# ----- RefineConfig validation -----

def test_refine_config_unknown_objective_lists_valid_names():
    with pytest.raises(UnknownNameError) as e:
        RefineConfig(objective="ppo")
    msg = str(e.value)
    for name in ("apo", "kto", "dpo", "hg-dagger", "iwr", "sirius", "bc"):
        assert name in msg


def test_refine_config_cached_reference_with_augmentation_raises():
    with pytest.raises(ValueError, match="shift"):
        RefineConfig(reference="cached", train=TrainConfig(shift_pad=4))
    RefineConfig(reference="online", train=TrainConfig(shift_pad=4))  # fine: scored on the augmented images
    RefineConfig(objective="hg-dagger", train=TrainConfig(shift_pad=4))  # fine: BC reads no reference


@pytest.mark.parametrize("kw", [dict(beta=0.0), dict(beta_d=-1.0), dict(beta_u=0.0), dict(lora_rank=-1),
                                dict(kl_samples=0), dict(demos_per_task=-1), dict(anchor_weight=-0.1),
                                dict(pre_window_steps="ignore"), dict(corrections="some"),
                                dict(undesirable="none")])
def test_refine_config_bad_values_raise(kw):
    with pytest.raises(ValueError):
        RefineConfig(**kw)
