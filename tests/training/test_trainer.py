"""The training loop: parameter updates, overfitting, learning-rate schedule, checkpoint/resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from apo.data.sampler import UniformSampler
from apo.objectives import BehaviourCloning
from apo.training import TrainConfig, train
from apo.training.checkpoint import load_checkpoint
from apo.training.trainer import lr_at


def cfg(**kw) -> TrainConfig:
    base = dict(steps=6, batch_size=8, lr=1e-3, warmup_steps=2, log_every=3, checkpoint_every=100,
                shift_pad=2, threads=1, seed=0)
    return TrainConfig(**{**base, **kw})


def params_of(policy) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in policy.named_parameters()}


class Counting:
    """BC that counts its calls and optionally raises at a given call (a simulated kill)."""

    def __init__(self, raise_at: int | None = None):
        self.calls = 0
        self.raise_at = raise_at
        self.bc = BehaviourCloning()

    def __call__(self, policy, batch):
        if self.raise_at is not None and self.calls == self.raise_at:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        return self.bc(policy, batch)


# ----- learning-rate schedule -----

def test_lr_warmup_then_cosine_to_ten_percent():
    c = cfg(steps=110, warmup_steps=10, lr=1.0)
    assert [lr_at(s, c) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lr_at(10, c) == pytest.approx(1.0)  # peak right after warmup
    assert lr_at(60, c) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert lr_at(110, c) == pytest.approx(0.1)  # ends at 10% of the peak
    assert lr_at(500, c) == pytest.approx(0.1)  # and stays there
    after = [lr_at(s, c) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(after, after[1:]))
    assert min(lr_at(s, c) for s in range(0, 111)) >= 0.1 - 1e-12


def test_lr_without_warmup():
    c = cfg(steps=100, warmup_steps=0, lr=2e-3)
    assert lr_at(0, c) == pytest.approx(2e-3)
    assert lr_at(50, c) == pytest.approx(2e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2))))


@pytest.mark.parametrize(
    "kwargs", [dict(steps=0), dict(batch_size=0), dict(lr=0.0), dict(warmup_steps=-1), dict(shift_pad=-1),
               dict(checkpoint_every=0), dict(log_every=0), dict(threads=0)]
)
def test_train_config_validation(kwargs):
    with pytest.raises(ValueError):
        cfg(**kwargs)


# ----- the loop -----

@pytest.mark.slow
def test_a_few_steps_update_every_parameter(tmp_path, tiny_policy, tiny_step_data):
    before = params_of(tiny_policy)
    buffers = {k: v.clone() for k, v in tiny_policy.model.named_buffers()}
    last = train(tiny_policy, tiny_step_data, BehaviourCloning(), cfg(), tmp_path)
    after = params_of(tiny_policy)
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert unchanged == []
    for k, v in tiny_policy.model.named_buffers():  # normalization buffers are not trained
        assert torch.equal(v, buffers[k]), k
    assert not tiny_policy.training  # left in eval mode
    assert {"loss", "token_acc", "l1", "grad_norm", "step", "lr"} <= set(last) and last["step"] == 6
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [3, 6]
    assert all(math.isfinite(m["loss"]) for m in lines)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 6
    assert json.loads((tmp_path / "train_config.json").read_text())["steps"] == 6


@pytest.mark.slow
def test_params_argument_restricts_training(tmp_path, tiny_policy, tiny_step_data):
    before = params_of(tiny_policy)
    head = [tiny_policy.model.head.weight, tiny_policy.model.head.bias]
    train(tiny_policy, tiny_step_data, BehaviourCloning(), cfg(steps=2), tmp_path, params=head)
    after = params_of(tiny_policy)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"model.head.weight", "model.head.bias"}


@pytest.mark.slow
def test_loss_decreases_when_overfitting_a_tiny_batch(tmp_path, tiny_policy, tiny_step_data):
    sampler = UniformSampler(len(tiny_step_data), 8, seed=0, subset=torch.tensor([0, 7, 21, 33]))
    c = cfg(steps=60, lr=3e-3, warmup_steps=0, shift_pad=0, log_every=1)
    train(tiny_policy, tiny_step_data, BehaviourCloning(), c, tmp_path, sampler=sampler)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 60
    first = lines[0]["loss"]
    last = sum(m["loss"] for m in lines[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    assert lines[-1]["token_acc"] > lines[0]["token_acc"]


def test_nan_loss_stops_training(tmp_path, tiny_policy, tiny_step_data):
    def nan_objective(policy, batch):
        return policy.logits(batch).sum() * float("nan"), {}

    with pytest.raises(FloatingPointError, match="step 0"):
        train(tiny_policy, tiny_step_data, nan_objective, cfg(), tmp_path)


@pytest.mark.slow
def test_rerun_with_a_different_config_is_refused(tmp_path, make_policy, tiny_step_data):
    train(make_policy(), tiny_step_data, BehaviourCloning(), cfg(steps=3), tmp_path)
    with pytest.raises(RuntimeError, match="different training config"):
        train(make_policy(), tiny_step_data, BehaviourCloning(), cfg(steps=10), tmp_path)


@pytest.mark.slow
def test_rerun_with_only_bookkeeping_changes_is_accepted(tmp_path, make_policy, tiny_step_data):
    first = make_policy()
    train(first, tiny_step_data, BehaviourCloning(), cfg(steps=3), tmp_path)
    counting = Counting()
    again = make_policy(seed=5)
    train(again, tiny_step_data, counting, cfg(steps=3, log_every=1, checkpoint_every=7), tmp_path)
    assert counting.calls == 0
    ref = params_of(first)
    for k, v in params_of(again).items():
        assert torch.equal(v, ref[k]), k


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_training(tmp_path, make_policy, tiny_step_data):
    c = cfg(steps=10, checkpoint_every=5, log_every=5)

    # reference: 10 steps in one go
    ref = make_policy(seed=0)
    train(ref, tiny_step_data, BehaviourCloning(), c, tmp_path / "ref")

    # interrupted after 8 steps; the last checkpoint is the one of step 5
    run = tmp_path / "run"
    killed = make_policy(seed=0)
    with pytest.raises(KeyboardInterrupt):
        train(killed, tiny_step_data, Counting(raise_at=8), c, run)
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 5

    # a fresh process: a policy with *different* initial weights, same run folder
    resumed = make_policy(seed=123)
    counting = Counting()
    train(resumed, tiny_step_data, counting, c, run)
    assert counting.calls == 5  # steps 5..9 only: it resumed from the checkpoint
    ref_p, res_p = params_of(ref), params_of(resumed)
    for k in ref_p:
        torch.testing.assert_close(res_p[k], ref_p[k], atol=1e-6, rtol=1e-5, msg=k)
    steps_logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps_logged == [5, 10]

    # running a finished run again trains nothing and restores the final weights
    again = make_policy(seed=7)
    counting = Counting()
    train(again, tiny_step_data, counting, c, run)
    assert counting.calls == 0
    for k, v in params_of(again).items():
        assert torch.equal(v, ref_p[k]) or torch.allclose(v, ref_p[k], atol=1e-6), k
