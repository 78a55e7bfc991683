"""``apo loop`` end to end on a tiny scale: deploy -> collect with takeovers -> refine -> redeploy,
the per-round history and plot, and continuing a killed or extended loop."""

from __future__ import annotations

import dataclasses
import json

import pytest

import apo.evaluation.loop as loop_mod
import apo.evaluation.protocol as protocol
from apo.data import load_episodes
from apo.deployment import DeployConfig, SimulatedPersonConfig
from apo.deployment.collect import INTERACTION_SEED_BASE
from apo.envs import EnvConfig
from apo.evaluation import EvalConfig
from apo.evaluation.loop import ROUND_SEED_STRIDE, LoopConfig, allocate_by_help, run_loop
from apo.evaluation.protocol import RunConfigMismatchError
from apo.registry import UnknownNameError
from apo.training.refine import RefineConfig
from apo.training.trainer import TrainConfig

TASK = "pick-place-v3"
PERTURBED = f"{TASK}+lighting"


def small_config(**kw) -> LoopConfig:
    train = TrainConfig(steps=2, batch_size=8, shift_pad=0, lr=1e-3, warmup_steps=1, log_every=1,
                        checkpoint_every=1, threads=1)
    fields = dict(
        tasks=(TASK,), rounds=1, episodes_per_task=1,
        person=SimulatedPersonConfig(divergence_steps=1, max_reaction_delay=0, hold_steps=3),
        deploy=DeployConfig(k_undesirable=2),
        refine=RefineConfig(lora_rank=4, lora_alpha=8.0, kl_samples=4, demos_per_task=1, train=train),
        eval=EvalConfig(episodes=1, parallel_envs=1), env=EnvConfig(max_steps=10),
    )
    return LoopConfig(**{**fields, **kw})


@pytest.fixture(scope="module")
def finished_loop(tmp_path_factory, saved_tiny_policy, tiny_dataset):
    out = tmp_path_factory.mktemp("loop") / "run"
    cfg = small_config(perturbation="lighting")
    history = run_loop(saved_tiny_policy, tiny_dataset, out, cfg)
    return out, cfg, history, saved_tiny_policy, tiny_dataset


@pytest.mark.slow
def test_loop_deploys_refines_and_redeploys(finished_loop):
    out, cfg, history, base, demos = finished_loop
    assert [h["round"] for h in history] == [0, 1]
    # round 0 deploys the base policy, round 1 the policy refined on round 0's interactions
    assert history[0]["policy"] == str(base)
    assert history[1]["policy"] == str(out / "round_0" / "refine" / "policy")
    assert (out / "round_0" / "refine" / "policy" / "config.json").exists()
    assert not (out / "round_1" / "refine").exists()  # the last round is only deployed
    for r in (0, 1):
        eps = load_episodes(out / f"round_{r}" / "interactions")
        assert [ep.seed for ep in eps] == [INTERACTION_SEED_BASE + r * ROUND_SEED_STRIDE]  # fresh scenes per round
        assert [ep.task for ep in eps] == [PERTURBED]  # deployed in the perturbed setting
        summary = json.loads((out / f"round_{r}" / "interactions" / "summary.json").read_text())["summary"]
        assert history[r]["intervention_rate"] == pytest.approx(summary["intervention_rate"])
        assert history[r]["intervention_rate"] > 0  # the simulated person took over
        results = json.loads((out / f"round_{r}" / "eval.json").read_text())["results"]
        assert history[r]["success_rate"] == results[PERTURBED]["success_rate"]
        assert history[r]["success_rate_original"] == results[TASK]["success_rate"]  # forgetting is tracked
        assert history[r]["setting"] == "perturbed" and list(history[r]["per_task"]) == [PERTURBED]
        assert any((out / f"round_{r}" / "videos" / "interactions").glob("*.mp4"))
        assert any((out / f"round_{r}" / "eval" / "videos").glob("*.mp4"))
    assert json.loads((out / "loop.json").read_text()) == history
    assert (out / "loop.png").stat().st_size > 0
    meta = json.loads((out / "round_0" / "refine" / "refine_config.json").read_text())
    assert meta["steps_per_category"]["expert"] == 20  # the demos were mixed in
    assert "round 1: deploy" in (out / "log.txt").read_text()


@pytest.mark.slow
def test_loop_continues_and_extends(finished_loop, monkeypatch):
    out, cfg, history, base, demos = finished_loop

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(loop_mod, "refine", must_not_run)
    monkeypatch.setattr(protocol, "evaluate", must_not_run)
    monkeypatch.setattr("apo.deployment.collect.run_episode", must_not_run)
    assert run_loop(base, demos, out, cfg) == history
    with pytest.raises(RunConfigMismatchError, match="episodes_per_task"):
        run_loop(base, demos, out, dataclasses.replace(cfg, episodes_per_task=2))
    with pytest.raises(RunConfigMismatchError, match="demos"):
        run_loop(base, None, out, cfg)
    # more rounds continue from the last policy: round 1 is refined next
    with pytest.raises(AssertionError, match="ran again"):
        run_loop(base, demos, out, dataclasses.replace(cfg, rounds=2))


@pytest.mark.parametrize("refine_from", ["previous", "base"])
def test_loop_refines_the_previous_or_the_base_policy(tmp_path, saved_tiny_policy, tiny_dataset, monkeypatch,
                                                     refine_from):
    import shutil

    calls = []

    def fake_refine(start, interactions, demos, out_dir, cfg):  # records what was refined, deploys it unchanged
        calls.append((str(start), [p.parent.name for p in interactions]))  # round_<r>/interactions
        shutil.copytree(start, out_dir / "policy")

    monkeypatch.setattr(loop_mod, "refine", fake_refine)
    out = tmp_path / "run"
    run_loop(saved_tiny_policy, tiny_dataset, out, small_config(rounds=2, refine_from=refine_from))
    previous = str(out / "round_0" / "refine" / "policy")
    first = str(saved_tiny_policy)
    assert calls == [(first, ["round_0"]), (previous if refine_from == "previous" else first, ["round_0", "round_1"])]


def test_extra_episodes_go_where_the_person_helped_and_are_refined_on(tmp_path, saved_tiny_policy, tiny_dataset,
                                                                      monkeypatch):
    import shutil

    calls = []

    def fake_refine(start, interactions, demos, out_dir, cfg):
        calls.append([str(p.relative_to(out)) for p in interactions])
        shutil.copytree(start, out_dir / "policy")

    monkeypatch.setattr(loop_mod, "refine", fake_refine)
    out = tmp_path / "run"
    history = run_loop(saved_tiny_policy, tiny_dataset, out, small_config(extra_episodes=2))
    assert calls == [["round_0/interactions", "round_0/extra_interactions"]]
    assert history[0]["extra_episodes"] == {TASK: 2}  # the only task, and the person helped on it
    assert "extra_episodes" not in history[1]  # the last round is not refined on
    extra = load_episodes(out / "round_0" / "extra_interactions")
    assert sorted(ep.seed for ep in extra) == [INTERACTION_SEED_BASE + 1, INTERACTION_SEED_BASE + 2]  # after round 0's own
    # the round's intervention rate is measured on its own episodes only
    own = json.loads((out / "round_0" / "interactions" / "summary.json").read_text())["summary"]
    assert history[0]["intervention_rate"] == pytest.approx(own["intervention_rate"]) and own["episodes"] == 1


def test_average_seeds_refines_once_per_seed_and_deploys_their_mean(tmp_path, saved_tiny_policy, tiny_dataset,
                                                                    monkeypatch):
    import shutil

    import torch

    from apo.models import VLAPolicy

    seeds = []

    def fake_refine(start, interactions, demos, out_dir, cfg):  # seed s: the start policy's weights + (s + 1)
        seeds.append(cfg.train.seed)
        policy = VLAPolicy.load(start)
        with torch.no_grad():
            for p in policy.model.parameters():
                p.add_(cfg.train.seed + 1)
        policy.save(out_dir / "policy")

    monkeypatch.setattr(loop_mod, "refine", fake_refine)
    out = tmp_path / "run"
    cfg = small_config(average_seeds=(3, 7))
    history = run_loop(saved_tiny_policy, tiny_dataset, out, cfg)
    assert seeds == [3, 7]
    refined = out / "round_0" / "refine"
    assert history[1]["policy"] == str(refined / "policy")  # the average is what gets deployed
    base = VLAPolicy.load(saved_tiny_policy).model.state_dict()
    mean = VLAPolicy.load(refined / "policy").model.state_dict()
    for name, p in VLAPolicy.load(saved_tiny_policy).model.named_parameters():
        torch.testing.assert_close(mean[name], base[name] + (4 + 8) / 2)
    # killed after seed 3 was refined: only seed 7 is refined again, then averaged
    shutil.rmtree(refined / "policy")
    shutil.rmtree(refined / "seed_7")
    seeds.clear()
    run_loop(saved_tiny_policy, tiny_dataset, out, cfg)
    assert seeds == [7] and (refined / "policy" / "config.json").exists()


@pytest.mark.parametrize("steps, budget, expected", [
    ({"a": 300, "b": 100, "c": 0, "d": 600}, 10, {"a": 3, "b": 1, "c": 0, "d": 6}),  # exact quotas
    ({"a": 100, "b": 100, "c": 100}, 2, {"a": 1, "b": 1, "c": 0}),  # equal remainders: the first listed
    ({"a": 10, "b": 60, "c": 30}, 7, {"a": 1, "b": 4, "c": 2}),  # quotas 0.7 / 4.2 / 2.1: largest remainders
    ({"a": 0, "b": 0}, 5, {"a": 0, "b": 0}),  # the person helped nowhere
    ({"a": 5, "b": 7}, 0, {"a": 0, "b": 0}),
])
def test_allocate_by_help(steps, budget, expected):
    shares = allocate_by_help(steps, budget)
    assert shares == expected
    assert sum(shares.values()) == (budget if sum(steps.values()) else 0)


def test_allocate_by_help_rejects_negative_counts():
    with pytest.raises(ValueError, match=">= 0"):
        allocate_by_help({"a": -1}, 3)


def test_plot_with_the_original_setting(tmp_path):
    history = [{"round": r, "success_rate": 0.1 * r, "success_rate_original": 0.5, "intervention_rate": 0.3}
               for r in range(3)]
    assert loop_mod.plot_loop(history, tmp_path / "p" / "loop.png").stat().st_size > 0


@pytest.mark.parametrize("kwargs, error", [
    (dict(rounds=0), ValueError), (dict(episodes_per_task=0), ValueError), (dict(tasks=()), ValueError),
    (dict(tasks=(f"{TASK}+texture",)), ValueError), (dict(perturbation="fog"), UnknownNameError),
    (dict(videos_per_outcome=-1), ValueError), (dict(refine_from="last"), ValueError),
    (dict(extra_episodes=-1), ValueError), (dict(average_seeds=(0,)), ValueError),
    (dict(average_seeds=(1, 1)), ValueError), (dict(episodes_per_task=20, extra_episodes=ROUND_SEED_STRIDE), ValueError),
])
def test_config_validation(kwargs, error):
    with pytest.raises(error):
        LoopConfig(**kwargs)
