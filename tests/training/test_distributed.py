"""Training on several processes: 2 gloo processes on the CPU take the same optimizer steps as one
process on the same global batch (APO with bin and FAST tokens, IWR, DPO), each process trains on its
balanced shard, and only rank 0 writes files. Plus the helpers without a process group."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from apo.data import Episode
from apo.data.balanced import BalancedSampler
from apo.data.dataset import StepData
from apo.data.sampler import shard, shard_positions
from apo.objectives.refinement import APO, DPO, IWR
from apo.training import TrainConfig, distributed, train
from apo.training.reference import OnlineReference
from unit_policies import bin_tokenizer, fast_tokenizer, random_episode, unit_policy

BATCH = 12  # 6 desirable, 3 corrections, 3 undesirable: every rank gets 3 / 1-2 / 1-2
STEPS = 2
SCENARIOS = {  # name: (objective, tokenizer)
    "apo": (lambda: APO(beta=0.5, kl_samples=4), "bin"),  # KL pairs at global positions 0, 3, 6, 9: both ranks
    "apo-fast": (lambda: APO(beta=0.5, kl_samples=6), "fast"),
    "iwr": (lambda: IWR.from_config(None), "bin"),  # per-batch group weight sums
    "dpo": (lambda: DPO(beta=0.5), "bin"),  # mean over the correction pairs of the global batch
}
CFG = TrainConfig(steps=STEPS, batch_size=BATCH, lr=1e-3, warmup_steps=0, shift_pad=2, log_every=1,
                  checkpoint_every=100, threads=1, seed=0)


def episodes() -> list[Episode]:
    return [random_episode([2] * 6, 1, "expert"), random_episode([1, 1, 0, 0, 2, 2, 1, 1], 2, "interaction"),
            random_episode([0, 2, 2, 1, 0, 0], 3, "interaction")]


def make_policy(kind: str, seed: int):
    return unit_policy(seed, bin_tokenizer() if kind == "bin" else fast_tokenizer(episodes()))


def run_scenarios(root: Path) -> dict:
    """Train every scenario for STEPS steps; returns final parameters and the indices each step saw."""
    results = {}
    for name, (objective, kind) in SCENARIOS.items():
        policy = make_policy(kind, seed=0)
        data = StepData.from_episodes(episodes(), policy.tokenizer)
        reference = OnlineReference(make_policy(kind, seed=7), data, seed=0)  # differs from the policy: r != 0
        seen = []

        def prepare(batch, reference=reference, seen=seen):
            seen.append(batch["index"].tolist())
            return reference.fill(batch)

        sampler = BalancedSampler(data.categories, BATCH, seed=3)
        last = train(policy, data, objective(), CFG, root / name, sampler=sampler, prepare=prepare)
        results[name] = {"params": {k: v.detach().clone() for k, v in policy.named_parameters()}, "seen": seen,
                         "last": last, "categories": data.categories}
    return results


def _worker(rank: int, world_size: int, port: int, root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    assert distributed.init_from_env() and distributed.world() == (rank, world_size)
    try:
        torch.save(run_scenarios(Path(root) / "dist"), Path(root) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    ctx = mp.start_processes(_worker, args=(2, distributed.free_port(), str(root)), nprocs=2, join=False,
                             start_method="spawn")
    single = run_scenarios(root / "single")  # meanwhile, the same steps in this (single) process
    deadline = time.time() + 240
    while not ctx.join(timeout=2):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the 2 training processes did not finish in time (a collective call mismatch?)")
    ranks = [torch.load(root / f"rank{r}.pt", weights_only=False) for r in range(2)]
    return root, single, ranks


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_distributed_steps_equal_single_process_steps(runs, name):
    root, single, ranks = runs
    ref = single[name]["params"]
    for r, res in enumerate(ranks):
        for k, v in res[name]["params"].items():
            # AdamW's first steps move a weight by about +-lr (1e-3) whatever its gradient's size, so a gradient
            # that is zero up to rounding (e.g. the attention key bias) can move by a few 1e-6 either way; a wrong
            # gradient moves weights by ~lr. Gradient sizes are compared exactly through grad_norm below.
            torch.testing.assert_close(v, ref[k], atol=5e-5, rtol=0, msg=lambda m: f"rank {r} {k}: {m}")
        if r:
            for k, v in res[name]["params"].items():  # identical updates on every process
                assert torch.equal(v, ranks[0][name]["params"][k]), k
    # the logged (global) numbers of every step: loss, z0 and the norm of the averaged gradient
    dist_log = [json.loads(s) for s in (root / "dist" / name / "metrics.jsonl").read_text().splitlines()]
    single_log = [json.loads(s) for s in (root / "single" / name / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in dist_log] == [1, 2]  # written once, by rank 0
    for d, s in zip(dist_log, single_log):
        for k in ("loss", "kl", "grad_norm"):
            if k in s:
                assert d[k] == pytest.approx(s[k], rel=1e-4, abs=1e-6), (name, d["step"], k)
    assert (root / "dist" / name / "checkpoint.pt").exists() and not list((root / "dist" / name).glob("*.tmp"))


def test_each_rank_trains_on_its_balanced_shard(runs):
    _, single, ranks = runs
    for name in SCENARIOS:
        cats = single[name]["categories"]
        for r, res in enumerate(ranks):
            sampler = BalancedSampler(cats, BATCH, seed=3, rank=r, world_size=2)
            assert res[name]["seen"] == [sampler.sample().tolist() for _ in range(STEPS)], (name, r)
        for step in range(STEPS):  # the two shards make up the single process's global batch
            merged = sorted(ranks[0][name]["seen"][step] + ranks[1][name]["seen"][step])
            assert merged == sorted(single[name]["seen"][step])


def test_apo_kl_pairs_are_spread_over_both_ranks():
    # kl_samples=4 of a global batch of 12: positions 0, 3, 6, 9 -> ranks 0, 1, 0, 1
    for r in range(2):
        pos = shard_positions(BATCH // 2, r, 2)
        assert torch.equal(pos, shard(torch.arange(BATCH), r, 2))
        assert ((pos % 3 == 0) & (pos // 3 < 4)).sum() == 2


# ----- without a process group -----

def test_helpers_are_identities_in_one_process():
    assert not distributed.is_distributed() and distributed.world() == (0, 1) and distributed.is_main()
    batch = {"x": torch.arange(6), "scalar": torch.tensor(1.0), "names": ["a"]}
    assert distributed.shard_batch(batch, 0, 1)["x"].tolist() == list(range(6))
    assert distributed.shard_batch(batch, 1, 3)["x"].tolist() == [1, 4]
    assert distributed.shard_batch(batch, 1, 3)["scalar"].item() == 1.0
    assert distributed.average_metrics({"loss": 1.5}) == {"loss": 1.5}
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.tensor([1.0, 2.0])
    distributed.sync_gradients([p])
    assert p.grad.tolist() == [1.0, 2.0]
    assert distributed.all_finite(torch.tensor(1.0)) and not distributed.all_finite(torch.tensor(float("nan")))


def test_init_from_env(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env() is False
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.init_from_env() is False
    monkeypatch.setenv("WORLD_SIZE", "2")
    for k in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        distributed.init_from_env()


def test_trainer_refuses_a_sharding_sampler_and_indivisible_batches(tmp_path, monkeypatch):
    policy = make_policy("bin", 0)
    data = StepData.from_episodes(episodes(), policy.tokenizer)
    monkeypatch.setattr(distributed, "world", lambda *a: (0, 2))
    with pytest.raises(ValueError, match="global batch"):
        train(policy, data, APO(), CFG, tmp_path, sampler=BalancedSampler(data.categories, BATCH, rank=0, world_size=2))
    with pytest.raises(ValueError, match="divisible"):
        train(policy, data, APO(), dataclasses.replace(CFG, batch_size=7), tmp_path)
