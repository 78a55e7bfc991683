"""Perturbed task variants: names, specs, and their effect on a live env (colours, texture upload,
lights, object start range)."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from apo.envs import EnvConfig, get_task, make_env
from apo.envs.perturbations import PERTURBATIONS, parse_perturbation, perturbation_name, perturbed_task
from apo.registry import UnknownNameError

TASK = "pick-place-v3"
SEED = 3
CFG = EnvConfig(max_steps=5)


def test_registered_perturbations():
    assert {"position", "background", "texture", "lighting"} <= set(PERTURBATIONS.names())


def test_perturbed_spec_keeps_instruction_and_step_cap():
    base = get_task(TASK)
    spec = get_task(f"{TASK}+texture+lighting")
    assert spec.metaworld_name == base.metaworld_name and spec.instruction == base.instruction
    assert spec.max_steps == base.max_steps
    assert [perturbation_name(m) for m in spec.modifiers] == ["texture", "lighting"]


def test_parse_perturbation_and_task_names():
    assert parse_perturbation("position+lighting") == ("position", "lighting")
    assert perturbed_task(TASK, "texture") == f"{TASK}+texture"
    with pytest.raises(UnknownNameError, match="texture"):  # the message lists the valid names
        parse_perturbation("textures")
    with pytest.raises(UnknownNameError):
        get_task(f"{TASK}+nope")
    for bad in ("", "texture+", "texture+texture"):
        with pytest.raises(ValueError):
            parse_perturbation(bad)


@pytest.fixture(scope="module")
def plain_env():
    env = make_env(TASK, CFG)
    yield env
    env.close()


@pytest.mark.slow
def test_runtime_perturbation_matches_the_registered_variant(plain_env):
    original = plain_env.reset(seed=SEED)[0]["image"]
    variant = make_env(f"{TASK}+texture+background+lighting", CFG)
    try:
        perturbed = variant.reset(seed=SEED)[0]["image"]
        assert variant.perturbations == ("texture", "background", "lighting")
    finally:
        variant.close()
    assert np.abs(perturbed.astype(int) - original).mean() > 20  # a clearly different scene
    # the same perturbations applied to a live env give the very same image: the edited texture
    # was uploaded to the renderer (without the upload the old table texture would still show)
    env = make_env(TASK, CFG)
    try:
        env.reset(seed=SEED)
        env.perturb("texture", "background", "lighting")
        np.testing.assert_array_equal(env.render(), perturbed)
        assert env.perturbations == ("texture", "background", "lighting")
    finally:
        env.close()


@pytest.mark.slow
def test_texture_alone_changes_the_table_and_is_uploaded():
    env = make_env(TASK, CFG)
    try:
        before = env.reset(seed=SEED)[0]["image"]
        uploads = []
        real = env._renderer.upload_texture
        env._renderer.upload_texture = lambda tid: (uploads.append(tid), real(tid))
        env.perturb("texture")
        m = env.raw_env.model
        assert uploads == [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_TEXTURE, "T_table")]  # only the edited one
        after = env.render()
        assert np.abs(after.astype(int) - before).mean() > 20
        env.perturb("texture")  # already applied: a no-op, nothing uploaded again
        assert len(uploads) == 1
    finally:
        env.close()


@pytest.mark.slow
def test_background_and_lighting_edit_the_model_once():
    env = make_env(TASK, CFG)
    try:
        m = env.raw_env.model
        table = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_MATERIAL, "table_wood")
        walls = np.flatnonzero(m.geom_matid == mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_MATERIAL, "wall_metal"))
        assert len(walls)
        light = m.light_diffuse.copy()
        env.perturb("background", "lighting")
        np.testing.assert_allclose(m.mat_rgba[table], (0.45, 0.55, 0.75, 1.0))
        np.testing.assert_allclose(m.geom_rgba[walls], np.tile((0.6, 0.8, 0.6, 1.0), (len(walls), 1)))
        np.testing.assert_allclose(m.light_diffuse, light * (0.9, 0.7, 0.5), rtol=1e-6)
        env.perturb("lighting")  # applying a perturbation again never compounds it
        np.testing.assert_allclose(m.light_diffuse, light * (0.9, 0.7, 0.5), rtol=1e-6)
        with pytest.raises(UnknownNameError):
            env.perturb("fog")
    finally:
        env.close()


@pytest.mark.slow
def test_position_widens_the_object_start_range(plain_env):
    space = plain_env.raw_env._random_reset_space
    lo, hi = space.low.copy(), space.high.copy()
    env = make_env(f"{TASK}+position", CFG)
    try:
        wide = env.raw_env._random_reset_space
        np.testing.assert_allclose(wide.low[:2], lo[:2] - 0.05)
        np.testing.assert_allclose(wide.high[:2], hi[:2] + 0.05)
        np.testing.assert_array_equal(wide.low[2:], lo[2:])  # object height and goal range untouched
        np.testing.assert_array_equal(wide.high[2:], hi[2:])
        starts = np.array([env.reset(seed=s)[1]["state"][4:6] for s in range(20)])
    finally:
        env.close()
    assert (starts >= wide.low[:2] - 1e-9).all() and (starts <= wide.high[:2] + 1e-9).all()
    outside = (starts < lo[:2]) | (starts > hi[:2])
    assert outside.any(), "no start position outside the original range in 20 resets"
