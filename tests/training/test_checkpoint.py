"""Atomic checkpoints."""

from __future__ import annotations

import pytest
import torch

from apo.training.checkpoint import load_checkpoint, remove, save_checkpoint


def test_round_trip_and_no_temporary_left(tmp_path):
    state = {"step": 3, "w": torch.arange(5.0), "nested": {"a": [1, 2]}}
    path = tmp_path / "sub" / "checkpoint.pt"
    save_checkpoint(path, state)
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]
    back = load_checkpoint(path)
    assert back["step"] == 3 and back["nested"] == {"a": [1, 2]}
    assert torch.equal(back["w"], state["w"])
    save_checkpoint(path, {"step": 4})  # overwrite
    assert load_checkpoint(path) == {"step": 4}


def test_missing_checkpoint_is_none(tmp_path):
    assert load_checkpoint(tmp_path / "checkpoint.pt") is None


def test_corrupt_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(RuntimeError, match="corrupt"):
        load_checkpoint(path)


def test_remove(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("1")
    (tmp_path / "f").write_text("1")
    remove(tmp_path / "d")
    remove(tmp_path / "f")
    remove(tmp_path / "missing")
    assert list(tmp_path.iterdir()) == []
