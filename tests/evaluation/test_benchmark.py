"""``apo benchmark`` end to end on a tiny scale: the perturbation protocol (interactions in the perturbed
setting, demos of the original task, evaluation on both), the report, videos, the log, and resuming."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import apo.evaluation.benchmark as bench
import apo.evaluation.protocol as protocol
from apo.data import load_episodes
from apo.data.storage import DatasetError
from apo.deployment import DeployConfig, SimulatedPersonConfig
from apo.envs import EnvConfig
from apo.evaluation import EVAL_SEED_BASE, EvalConfig
from apo.evaluation.benchmark import BenchmarkConfig, run_benchmark
from apo.evaluation.protocol import RunConfigMismatchError
from apo.registry import UnknownNameError
from apo.training.refine import RefineConfig
from apo.training.trainer import TrainConfig

TASK = "pick-place-v3"
PERTURBED = f"{TASK}+texture"


def small_config(base, demos, **kw) -> BenchmarkConfig:
    train = TrainConfig(steps=2, batch_size=8, shift_pad=0, lr=1e-3, warmup_steps=1, log_every=1,
                        checkpoint_every=1, threads=1)
    fields = dict(
        tasks=(TASK,), perturbation="texture", objectives=("apo",), base_policy=base, demos=demos,
        interaction_episodes=2,
        person=SimulatedPersonConfig(divergence_steps=1, max_reaction_delay=0, hold_steps=3),  # takes over soon
        deploy=DeployConfig(k_undesirable=2),
        refine=RefineConfig(lora_rank=4, lora_alpha=8.0, kl_samples=4, demos_per_task=1, train=train),
        train_seeds=(0,), eval=EvalConfig(episodes=2, parallel_envs=1), env=EnvConfig(max_steps=10),
        video_methods=("base",),
    )
    return BenchmarkConfig(**{**fields, **kw})


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, saved_tiny_policy, tiny_dataset):
    out = tmp_path_factory.mktemp("bench") / "run"
    cfg = small_config(saved_tiny_policy, tiny_dataset)
    tables = run_benchmark(out, cfg)
    return out, cfg, tables


@pytest.mark.slow
def test_perturbation_protocol_end_to_end(finished_run):
    out, cfg, tables = finished_run
    # interaction episodes were collected in the perturbed setting, with takeovers
    inter = load_episodes(out / "interactions")
    assert len(inter) == 2 and {ep.task for ep in inter} == {PERTURBED}
    assert all((ep.labels == 2).any() and ep.policy_actions is not None for ep in inter)
    # refinement mixed in demonstrations of the original task (1 per task: 20 expert steps)
    meta = json.loads((out / "refine" / "apo_s0" / "refine_config.json").read_text())
    assert meta["steps_per_category"]["expert"] == 20
    assert meta["steps_per_category"]["correction"] == sum(int((ep.labels == 2).sum()) for ep in inter)
    # the reference log-probs were scored once per training seed, in a file every objective shares
    assert (out / "refine" / "reference_s0.pt").exists()
    assert not (out / "refine" / "apo_s0" / "reference_cache.pt").exists()
    # every policy was evaluated on the same seeds in both settings
    for name in ("base", "apo_s0"):
        results = json.loads((out / "eval" / f"{name}.json").read_text())["results"]
        for task in (PERTURBED, TASK):
            assert results[task]["seeds"] == [EVAL_SEED_BASE, EVAL_SEED_BASE + 1]
    # one table per setting, method x task with intervals
    assert list(tables) == ["perturbed", "original"]
    assert set(tables["perturbed"]) == {"base", "apo"}
    assert list(tables["perturbed"]["apo"]) == [PERTURBED, "average"]
    assert list(tables["original"]["apo"]) == [TASK, "average"]
    assert len(tables["original"]["base"][TASK]["ci95"]) == 2
    data = json.loads((out / "results.json").read_text())
    assert data["perturbation"] == "texture" and data["interaction_summary"]["episodes"] == 2
    assert data["tables"] == json.loads(json.dumps(tables))
    md = (out / "results.md").read_text()
    assert "## perturbed" in md and "## original" in md and "forgetting" in md
    assert (out / "success.png").exists() and (out / "success_original.png").exists()
    # videos: interaction episodes (the person's steps framed) and evaluations of video_methods only
    assert any(p.name.startswith(PERTURBED) for p in (out / "videos" / "interactions").glob("*.mp4"))
    videos = sorted(p.name for p in (out / "eval" / "base" / "videos").glob("*.mp4"))
    assert any(v.startswith(PERTURBED) for v in videos) and any(v.startswith(f"{TASK}_") for v in videos)
    assert not (out / "eval" / "apo_s0" / "videos").exists()
    # the run folder keeps its configuration and a log of the stages
    assert json.loads((out / "config.json").read_text())["perturbation"] == "texture"
    log = (out / "log.txt").read_text()
    for stage in ("evaluate base", "refine: apo_s0", "evaluate apo_s0", "interactions: 2 episodes", "report"):
        assert stage in log, stage


@pytest.mark.slow
def test_rerun_continues_without_redoing_any_stage(finished_run, monkeypatch):
    out, cfg, tables = finished_run

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(bench, "refine", must_not_run)
    monkeypatch.setattr(protocol, "evaluate", must_not_run)
    monkeypatch.setattr("apo.deployment.collect.run_episode", must_not_run)
    assert run_benchmark(out, cfg) == tables
    # with a given base policy the base recipe trains nothing, so changing it does not block continuing
    other_recipe = dataclasses.replace(cfg.recipe, tokenizer="bin" if cfg.recipe.tokenizer == "fast" else "fast")
    assert run_benchmark(out, dataclasses.replace(cfg, recipe=other_recipe)) == tables
    # more training seeds or another objective only add stages; other settings are refused
    with pytest.raises(RunConfigMismatchError, match="perturbation"):
        run_benchmark(out, dataclasses.replace(cfg, perturbation="lighting"))
    with pytest.raises(RunConfigMismatchError, match="interaction_episodes"):
        run_benchmark(out, dataclasses.replace(cfg, interaction_episodes=3))
    with pytest.raises(AssertionError, match="ran again"):  # the new seed's refinement starts
        run_benchmark(out, dataclasses.replace(cfg, train_seeds=(0, 1)))


def test_given_base_without_demos_collects_refinement_demos(tmp_path, monkeypatch):
    calls = []

    class Stop(Exception):
        pass

    def fake_collect(out, demo_cfg, env_cfg):
        calls.append((out, demo_cfg))
        raise Stop

    monkeypatch.setattr(bench, "collect_demos", fake_collect)
    with pytest.raises(Stop):
        run_benchmark(tmp_path / "run", small_config(tmp_path / "base", None))
    (out, demo_cfg), = calls
    assert out == tmp_path / "run" / "demos"
    assert demo_cfg.tasks == (TASK,) and demo_cfg.episodes_per_task == 1  # refine.demos_per_task, original task


def test_missing_demo_folder_fails_before_anything_runs(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        run_benchmark(tmp_path / "run", small_config(tmp_path / "base", tmp_path / "nope"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kwargs, error", [
    (dict(perturbation="fog"), UnknownNameError),
    (dict(perturbation="texture+texture"), ValueError),
    (dict(tasks=(PERTURBED,)), ValueError),
    (dict(objectives=("ppo",)), UnknownNameError),
    (dict(train_seeds=(0, 0)), ValueError),
    (dict(train_seeds=()), ValueError),
    (dict(videos_per_outcome=-1), ValueError),
])
def test_config_validation(kwargs, error):
    with pytest.raises(error):
        BenchmarkConfig(**kwargs)


def test_defaults_follow_the_paper():
    cfg = BenchmarkConfig()
    assert cfg.interaction_episodes == 20 and cfg.refine.demos_per_task == 20 and cfg.eval.episodes == 50
    assert len(cfg.train_seeds) >= 3 and cfg.perturbation is None
    assert np.all([o in cfg.objectives for o in ("apo", "kto", "dpo", "hg-dagger", "iwr", "sirius")])
