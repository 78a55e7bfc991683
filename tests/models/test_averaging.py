"""average_policies: the element-wise mean of policies refined from one base, and its refusals."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from apo.models import PolicyLoadError, VLAPolicy
from apo.models.averaging import average_policies


def _perturbed(make_policy, scale: float, seed: int) -> VLAPolicy:
    """The seed-0 tiny policy plus a deterministic weight change (stands in for a merged LoRA update)."""
    policy = make_policy(seed=0)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return policy


def test_average_is_the_mean_of_the_weight_changes(tmp_path, make_policy):
    base = make_policy(seed=0).model.state_dict()
    a, b, c = (_perturbed(make_policy, 0.1, s) for s in (1, 2, 3))
    paths = [p.save(tmp_path / name) for p, name in ((a, "a"), (b, "b"), (c, "c"))]
    avg = average_policies(paths)
    sa, sb, sc, sm = (p.model.state_dict() for p in (a, b, c, avg))
    for name, value in sm.items():
        delta = ((sa[name] - base[name]) + (sb[name] - base[name]) + (sc[name] - base[name])) / 3
        torch.testing.assert_close(value, base[name] + delta, rtol=0, atol=1e-6)
    changed = [n for n in sm if not torch.equal(sm[n], sa[n])]
    assert changed, "the average must differ from its first member"
    # it still acts, and it round-trips through save/load
    again = VLAPolicy.load(avg.save(tmp_path / "avg"))
    for name, value in again.model.state_dict().items():
        torch.testing.assert_close(value, sm[name], rtol=0, atol=0)
    assert again._instructions.keys() == a._instructions.keys()


def test_averaging_a_policy_with_itself_changes_nothing(tmp_path, make_policy, tiny_episodes, instruction):
    a = _perturbed(make_policy, 0.1, 1)
    path = a.save(tmp_path / "a")
    avg = average_policies([path, path])
    ep = tiny_episodes[0]
    np.testing.assert_allclose(avg.act_batch(ep.images[:2], ep.proprio[:2], [instruction] * 2),
                               a.act_batch(ep.images[:2], ep.proprio[:2], [instruction] * 2))


def test_refuses_policies_with_different_tokenizers_or_too_few(tmp_path, make_policy):
    a = make_policy(seed=0).save(tmp_path / "a")
    b = make_policy(seed=0, n_bins=32).save(tmp_path / "b")
    with pytest.raises(PolicyLoadError, match="different model config|different tokenizer"):
        average_policies([a, b])
    with pytest.raises(ValueError, match="at least two"):
        average_policies([a])


def test_average_command_writes_a_policy(tmp_path, make_policy, monkeypatch):
    from apo.cli.main import main

    paths = [_perturbed(make_policy, 0.1, s).save(tmp_path / f"p{s}") for s in (1, 2)]
    monkeypatch.setattr(sys, "argv", ["apo", "average", *map(str, paths), "--out", str(tmp_path / "avg")])
    main()
    assert isinstance(VLAPolicy.load(tmp_path / "avg"), VLAPolicy)


def test_average_command_refuses_an_out_folder_it_would_clobber(tmp_path, make_policy, monkeypatch):
    from apo.cli.main import main

    paths = [_perturbed(make_policy, 0.1, s).save(tmp_path / f"p{s}") for s in (1, 2)]
    before = (paths[0] / "model.safetensors").read_bytes()
    other = tmp_path / "run"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    for out, args in ((paths[0], paths), (other, paths), (tmp_path / "new", paths[:1])):
        monkeypatch.setattr(sys, "argv", ["apo", "average", *map(str, args), "--out", str(out)])
        with pytest.raises(SystemExit) as exc:
            main()
        assert exc.value.code == 2
    assert (paths[0] / "model.safetensors").read_bytes() == before
    assert (other / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "new").exists()
