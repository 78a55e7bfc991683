"""Environments: MetaWorld v3 tasks (registry), fast CPU rendering, scripted experts."""

import os

# mujoco picks its GL backend when it is first imported (GLFW unless told otherwise, which needs a
# display): offscreen EGL is set here, before any module of this package imports mujoco.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("LP_NUM_THREADS", "1")  # llvmpipe: 1 thread is as fast as 2, leaves a core for torch

from apo.envs.experts import ScriptedExpert
from apo.envs.metaworld_env import ACTION_DIM, PROPRIO_DIM, EnvConfig, MetaWorldEnv, make_env
from apo.envs.rendering import CameraConfig
from apo.envs.tasks import DEV_SUITE, TASKS, TaskSpec, get_task

__all__ = [
    "ACTION_DIM", "PROPRIO_DIM", "CameraConfig", "DEV_SUITE", "EnvConfig", "MetaWorldEnv",
    "ScriptedExpert", "TASKS", "TaskSpec", "get_task", "make_env",
]
