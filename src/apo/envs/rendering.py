"""Fast offscreen rendering of MuJoCo scenes on the CPU.

At MuJoCo's default quality llvmpipe renders ~13 fps; with multisampling off (set *before*
the renderer is built) and shadows, reflections and skybox off it renders 100-200 fps at
64-96 px. The camera is a free camera framing the workspace (MetaWorld's corner cameras
render upside down and show objects tiny at 64 px).

With ``goal_pin`` a thin pin is drawn from the table up to the task's goal marker (the model's ``goal``
site, when it is visible). From one camera a floating marker's height and depth are ambiguous
(pick-place's goal floats 5-30 cm above the table); the pin's foot on the table fixes x and y and
its length the height. It is drawn only in the image, not simulated.

Colours (``mat_rgba``, ``geom_rgba``) and lights are read from the model at every frame, but
textures live in the GL context once the renderer exists: a texture edited in ``model.tex_data``
afterwards is shown only after :meth:`FastRenderer.upload_texture` (``mujoco.mjr_uploadTexture``).
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco  # MUJOCO_GL=egl is set in apo/envs/__init__.py, which runs before this module
import numpy as np


@dataclass(frozen=True)
class CameraConfig:
    lookat: tuple[float, float, float] = (0.0, 0.68, 0.1)
    """Point the camera looks at (world frame, metres)."""
    distance: float = 0.95
    """Distance from the look-at point (metres)."""
    azimuth: float = 140.0
    """Azimuth in degrees."""
    elevation: float = -35.0
    """Elevation in degrees (negative looks down)."""


GOAL_PIN_RADIUS = 0.008
"""Radius (metres) of the goal pin: about one pixel wide at 64 px."""


class FastRenderer:
    """Renders ``(size, size, 3)`` uint8 frames of a MuJoCo model/data pair."""

    def __init__(self, model: mujoco.MjModel, size: int = 64, camera: CameraConfig = CameraConfig(),
                 goal_pin: bool = False):
        if size < 16 or size > 512:
            raise ValueError(f"image size must be in [16, 512], got {size}")
        model.vis.quality.offsamples = 0
        self.size = size
        self._model = model
        self._renderer = mujoco.Renderer(model, size, size)
        self._cam = mujoco.MjvCamera()
        self._cam.type = mujoco.mjtCamera.mjCAMERA_FREE
        self._cam.lookat[:] = camera.lookat
        self._cam.distance = camera.distance
        self._cam.azimuth = camera.azimuth
        self._cam.elevation = camera.elevation
        self._opt = mujoco.MjvOption()
        self._goal_site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "goal") if goal_pin else -1

    def _draw_goal_pin(self, data: mujoco.MjData) -> None:
        """Append a capsule from the table (z = 0) to the goal site to the scene, if the goal is shown."""
        scene, site = self._renderer.scene, self._goal_site
        if site < 0 or self._model.site_rgba[site, 3] <= 0 or scene.ngeom >= scene.maxgeom:
            return
        top = data.site_xpos[site].astype(np.float64)
        foot = np.array([top[0], top[1], 0.0])
        geom = scene.geoms[scene.ngeom]
        mujoco.mjv_initGeom(geom, mujoco.mjtGeom.mjGEOM_CAPSULE, np.zeros(3), np.zeros(3), np.eye(3).ravel(),
                            self._model.site_rgba[site].astype(np.float32))
        mujoco.mjv_connector(geom, mujoco.mjtGeom.mjGEOM_CAPSULE, GOAL_PIN_RADIUS, foot, top)
        scene.ngeom += 1

    def render(self, data: mujoco.MjData) -> np.ndarray:
        self._renderer.update_scene(data, self._cam, self._opt)
        self._draw_goal_pin(data)
        flags = self._renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
        return self._renderer.render().copy()

    def upload_texture(self, texture_id: int) -> None:
        """Copy texture ``texture_id`` from ``model.tex_data`` to the GL context (after editing it)."""
        if self._renderer is None:
            raise RuntimeError("the renderer is closed")
        if not 0 <= texture_id < self._model.ntex:
            raise ValueError(f"texture id {texture_id} out of range (the model has {self._model.ntex} textures)")
        # mujoco.Renderer keeps its GL and MuJoCo render contexts private; the upload needs both
        gl = self._renderer._gl_context
        if gl is not None:
            gl.make_current()
        mujoco.mjr_uploadTexture(self._model, self._renderer._mjr_context, texture_id)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
