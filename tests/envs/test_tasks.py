"""Task registry: the development suite, the MetaWorld fallback, TaskSpec validation."""

from __future__ import annotations

import pytest

from apo.envs import DEV_SUITE, TASKS, TaskSpec, get_task


def test_dev_suite_is_registered():
    assert set(DEV_SUITE) <= set(TASKS.names())
    for name in DEV_SUITE:
        spec = get_task(name)
        assert spec.metaworld_name == name
        assert spec.instruction.strip()
        assert 1 <= spec.max_steps <= 500


def test_dev_suite_instructions_are_distinct():
    assert len({get_task(n).instruction for n in DEV_SUITE}) == len(DEV_SUITE)


def test_fallback_builds_spec_from_metaworld_name():
    spec = get_task("drawer-open-v3")
    assert spec == TaskSpec("drawer-open-v3", "drawer open", max_steps=300)
    assert "drawer-open-v3" not in TASKS  # built on the fly, not registered
    assert "drawer-open-v3" in TASKS.names(include_fallback=True)


def test_fallback_names_are_metaworld_v3_names():
    names = TASKS.names(include_fallback=True)
    assert "button-press-v3" in names and "reach-v3" in names
    assert all(n.endswith("-v3") for n in names)
    assert len(names) == len(set(names))
    assert not any(n.endswith("-goal-observable") for n in names)


@pytest.mark.parametrize(
    "kwargs", [dict(instruction="   "), dict(instruction="x", max_steps=0), dict(instruction="x", max_steps=501)]
)
def test_taskspec_validation(kwargs):
    with pytest.raises(ValueError):
        TaskSpec("reach-v3", **kwargs)


def test_registering_an_existing_task_fails():
    with pytest.raises(ValueError, match="already registered"):
        TASKS.add("pick-place-v3", TaskSpec("pick-place-v3", "anything"))
