"""Fixtures of the console tests: a tiny untrained policy, envs that record what they execute."""

from __future__ import annotations

import pytest

from console_helpers import RecordingEnv, build_tiny_policy


@pytest.fixture
def console_policy(tmp_path_factory):
    return build_tiny_policy(tmp_path_factory.mktemp("console_stats"))


@pytest.fixture
def recording_envs(monkeypatch):
    """The console's envs record every executed action: ``recording_envs[i].episodes[j]``."""
    import apo.deployment.console.session as session_mod

    made: list[RecordingEnv] = []
    real = session_mod.make_env

    def make(task, cfg):
        made.append(RecordingEnv(real(task, cfg)))
        return made[-1]

    monkeypatch.setattr(session_mod, "make_env", make)
    return made
