"""Perturbed task variants (the paper's position, background and texture perturbations, plus lighting).

A perturbation is a function that edits a built MetaWorld env at runtime: material colours
(``model.mat_rgba``), geom colours (``model.geom_rgba``), texture pixels (``model.tex_data``, which
the env then uploads to its renderer with ``mujoco.mjr_uploadTexture``), lights, or the range object
start positions are drawn from (``env._random_reset_space``). Register one with
``@PERTURBATIONS.register(name)``; any task name ``"<task>+<perturbation>[+<perturbation>...]"``
(e.g. ``pick-place-v3+texture``) is then a valid task with the base task's instruction and step cap,
and ``MetaWorldEnv.perturb(name)`` applies it to a live env.
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


def _geoms_with_material(model: mujoco.MjModel, name: str) -> list[int]:
    mid = _material(model, name)
    return [g for g in range(model.ngeom) if model.geom_matid[g] == mid]


@PERTURBATIONS.register("background")
def background_colours(env: Any) -> None:
    """Blue-grey table and dark floor (material tints, ``mat_rgba``), pale green walls (the wall
    geoms' own colour, ``geom_rgba``, which overrides their material's)."""
    m = env.model
    m.mat_rgba[_material(m, "table_wood")] = (0.45, 0.55, 0.75, 1.0)
    m.mat_rgba[_material(m, "basic_floor")] = (0.25, 0.25, 0.25, 1.0)
    for g in _geoms_with_material(m, "wall_metal"):
        m.geom_rgba[g] = (0.6, 0.8, 0.6, 1.0)


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


def parse_perturbation(spec: str) -> tuple[str, ...]:
    """``"position+lighting"`` -> ``("position", "lighting")``; unknown or repeated names raise an error."""
    names = tuple(p.strip() for p in spec.split("+"))
    if not spec.strip() or any(not n for n in names):
        raise ValueError(f"perturbation {spec!r} is empty; give registered names joined by '+', "
                         f"e.g. 'texture' or 'position+lighting' (valid: {', '.join(PERTURBATIONS.names())})")
    for n in names:
        PERTURBATIONS.get(n)  # unknown names raise, listing the valid ones
    if len(set(names)) != len(names):
        raise ValueError(f"perturbation {spec!r} names a perturbation twice")
    return names


def perturbed_task(task: str, perturbation: str) -> str:
    """The registered variant of ``task`` under ``perturbation``, e.g. ``pick-place-v3+texture``."""
    return "+".join((task, *parse_perturbation(perturbation)))


def perturbation_name(modifier: Callable[[Any], None]) -> str:
    """The registered name of a perturbation function (its function name if it is not registered)."""
    for name in PERTURBATIONS:
        if PERTURBATIONS.get(name) is modifier:
            return name
    return getattr(modifier, "__name__", repr(modifier))


def perturbed_spec(name: str, get_base: Callable[[str], Any]):
    """Build the TaskSpec of ``base+pert[+pert...]`` or return None if ``name`` is not of that form."""
    if "+" not in name:
        return None
    base, *perts = name.split("+")
    spec = get_base(base)
    mods = tuple(PERTURBATIONS.get(p) for p in perts)  # unknown perturbations raise, listing valid ones
    return dataclasses.replace(spec, modifiers=spec.modifiers + mods)
