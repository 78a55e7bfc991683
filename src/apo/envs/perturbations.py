"""Perturbed task variants (the paper's position, background and texture perturbations, plus lighting).

A perturbation is a function applied to the raw MetaWorld env when it is built (before the renderer
exists, so new textures are uploaded with it). Register one with ``@PERTURBATIONS.register(name)``;
any task name ``"<task>+<perturbation>[+<perturbation>...]"`` (e.g. ``pick-place-v3+texture``) is then a
valid task with the base task's instruction and step cap.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import mujoco
import numpy as np
from gymnasium.spaces import Box

from apo.registry import Registry

PERTURBATIONS: Registry[Callable[[Any], None]] = Registry("perturbation")


def _material(model: mujoco.MjModel, name: str) -> int:
    mid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_MATERIAL, name)
    if mid < 0:
        raise KeyError(f"this MetaWorld model has no material {name!r}")
    return mid


@PERTURBATIONS.register("position")
def wider_positions(env: Any, margin: float = 0.05) -> None:
    """Object start positions drawn from a range widened by ``margin`` metres in x and y."""
    space = env._random_reset_space
    low, high = space.low.copy(), space.high.copy()
    low[:2] -= margin
    high[:2] += margin
    env._random_reset_space = Box(low, high, dtype=np.float64)


@PERTURBATIONS.register("background")
def background_colours(env: Any) -> None:
    """Blue-grey table, dark floor and pale green walls (material tints)."""
    m = env.model
    m.mat_rgba[_material(m, "table_wood")] = (0.45, 0.55, 0.75, 1.0)
    m.mat_rgba[_material(m, "basic_floor")] = (0.25, 0.25, 0.25, 1.0)
    m.mat_rgba[_material(m, "wall_metal")] = (0.6, 0.8, 0.6, 1.0)


@PERTURBATIONS.register("texture")
def checkerboard_table(env: Any, squares: int = 8) -> None:
    """The table's wood texture replaced by a black-and-white checkerboard."""
    m = env.model
    tid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_TEXTURE, "T_table")
    if tid < 0:
        raise KeyError("this MetaWorld model has no table texture 'T_table'")
    w, h, c = int(m.tex_width[tid]), int(m.tex_height[tid]), int(m.tex_nchannel[tid])
    yy, xx = np.mgrid[0:h, 0:w]
    board = (((yy * squares // h) + (xx * squares // w)) % 2 * 200 + 30).astype(np.uint8)
    adr = int(m.tex_adr[tid])
    m.tex_data[adr : adr + w * h * c] = np.repeat(board[..., None], c, axis=-1).reshape(-1)


@PERTURBATIONS.register("lighting")
def dim_warm_light(env: Any) -> None:
    """Dimmer, warmer light."""
    env.model.light_diffuse[:] = env.model.light_diffuse * np.array([0.9, 0.7, 0.5])


def perturbed_spec(name: str, get_base: Callable[[str], Any]):
    """Build the TaskSpec of ``base+pert[+pert...]`` or return None if ``name`` is not of that form."""
    if "+" not in name:
        return None
    base, *perts = name.split("+")
    spec = get_base(base)
    mods = tuple(PERTURBATIONS.get(p) for p in perts)  # unknown perturbations raise, listing valid ones
    return dataclasses.replace(spec, modifiers=spec.modifiers + mods)
