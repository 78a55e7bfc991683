"""Environments: MetaWorld v3 tasks (registry), fast CPU rendering, scripted experts."""

from apo.envs.experts import ScriptedExpert
from apo.envs.metaworld_env import ACTION_DIM, PROPRIO_DIM, EnvConfig, MetaWorldEnv, make_env
from apo.envs.rendering import CameraConfig
from apo.envs.tasks import DEV_SUITE, TASKS, TaskSpec, get_task

__all__ = [
    "ACTION_DIM", "PROPRIO_DIM", "CameraConfig", "DEV_SUITE", "EnvConfig", "MetaWorldEnv",
    "ScriptedExpert", "TASKS", "TaskSpec", "get_task", "make_env",
]
