"""MetaWorld v3 tasks as gymnasium environments with image observations.

Observation: ``{"image": uint8 (S, S, 3), "proprio": float32 (4,), "instruction": str}``;
proprio is the end-effector position (x, y, z) and the gripper opening. The full 39-d
MetaWorld state (object poses, goal) is *not* given to the policy; it is returned in
``info["state"]`` for the scripted expert / simulated person.

Resets are randomized (object and goal positions) and reproducible: ``reset(seed=s)`` always
gives the same initial scene for the same ``s``. ``terminated`` becomes True on success when
``terminate_on_success`` is set; ``truncated`` at the task's step cap.

Perturbations (``apo.envs.perturbations``) are applied at runtime to the built env: through the
task name (``"pick-place-v3+texture"``) or :meth:`MetaWorldEnv.perturb` on a live env.
"""

from __future__ import annotations

import json
import string
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import gymnasium as gym
import mujoco
import numpy as np

from apo.envs.rendering import CameraConfig, FastRenderer
from apo.envs.tasks import TaskSpec, get_task

PROPRIO_DIM = 4
ACTION_DIM = 4


@dataclass(frozen=True)
class EnvConfig:
    image_size: int = 64
    """Side of the square camera image in pixels."""
    camera: CameraConfig = field(default_factory=CameraConfig)
    """Free camera framing the workspace."""
    max_steps: int | None = None
    """Override the task's step cap (None: use the task's own)."""
    terminate_on_success: bool = True
    """End the episode at the first successful step."""
    goal_pin: bool = False
    """Draw a pin from the table up to the goal marker, so the goal's height is visible from the one
    camera (pick-place's goal floats 5-30 cm up; docs/results.md). A policy must be deployed with the
    rendering it was trained on."""

    def __post_init__(self) -> None:
        if not 16 <= self.image_size <= 512:
            raise ValueError(f"image_size must be in [16, 512], got {self.image_size}")
        if self.max_steps is not None and not 1 <= self.max_steps <= 500:
            raise ValueError(f"max_steps must be in [1, 500] (MetaWorld's cap), got {self.max_steps}")

    def rendering(self) -> dict[str, Any]:
        """What the images depend on, as recorded with episodes and policies (JSON-ready)."""
        return {"image_size": self.image_size, "camera": {k: list(v) if isinstance(v, tuple) else v
                                                          for k, v in asdict(self.camera).items()},
                "goal_pin": self.goal_pin}


class RenderingMismatchError(ValueError):
    """A policy or dataset meets images rendered otherwise than its own; the message names the options."""


def rendering_extras(env: Any) -> dict[str, str]:
    """``{"rendering": <json>}`` for an episode recorded in ``env`` (empty for an env without an EnvConfig)."""
    cfg = getattr(env, "config", None)
    return {"rendering": json.dumps(cfg.rendering())} if isinstance(cfg, EnvConfig) else {}


def recorded_rendering(extras: list[dict[str, str]], what: str) -> dict[str, Any] | None:
    """The one rendering recorded in these episodes' extras (None if none recorded); mixed ones raise."""
    found = {e["rendering"] for e in extras if "rendering" in e}
    if len(found) > 1:
        raise RenderingMismatchError(
            f"{what} mixes episodes rendered differently ({sorted(found)}); keep one rendering per dataset "
            "(--env.* options)")
    return json.loads(found.pop()) if found else None


def check_rendering(recorded: dict[str, Any] | None, env_cfg: EnvConfig, what: str = "the policy") -> None:
    """Raise if ``env_cfg`` renders differently from ``recorded`` (an ``EnvConfig.rendering()``, possibly
    with only some keys, e.g. an old policy's image size alone); None: nothing recorded, nothing to check."""
    if not recorded:
        return
    now = env_cfg.rendering()
    fixes = {
        "image_size": f"--env.image-size {recorded.get('image_size')}",
        "goal_pin": "--env.goal-pin" if recorded.get("goal_pin") else "leave out --env.goal-pin",
        "camera": " ".join(f"--env.camera.{k} " + (" ".join(map(str, v)) if isinstance(v, list) else str(v))
                           for k, v in (recorded.get("camera") or {}).items()),
    }
    wrong = [k for k in recorded if k in now and now[k] != recorded[k]]
    if wrong:
        raise RenderingMismatchError(
            f"{what} was made with other images than this env renders: "
            + "; ".join(f"{k} {recorded[k]} there, {now[k]} here" for k in wrong)
            + ". Deploy with the rendering it was made with: " + "; ".join(fixes[k] for k in wrong if k in fixes)
        )


class MetaWorldEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, task: str, config: EnvConfig = EnvConfig()):
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

        self.task_name = task
        self.spec_: TaskSpec = get_task(task)
        self.config = config
        self.max_steps = config.max_steps or self.spec_.max_steps
        self._env = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[self.spec_.metaworld_name + "-goal-observable"]()
        self._env._freeze_rand_vec = False
        self._env.seeded_rand_vec = True
        self._renderer = FastRenderer(self._env.model, config.image_size, config.camera, config.goal_pin)
        self._applied: list[Callable[[Any], None]] = []
        self._apply(self.spec_.modifiers)  # a registered variant, e.g. "pick-place-v3+texture"
        s = config.image_size
        self.observation_space = gym.spaces.Dict(
            {
                "image": gym.spaces.Box(0, 255, (s, s, 3), np.uint8),
                "proprio": gym.spaces.Box(-np.inf, np.inf, (PROPRIO_DIM,), np.float32),
                "instruction": gym.spaces.Text(max_length=512, charset=string.printable),  # default charset has no spaces
            }
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self._t = 0
        self.state: np.ndarray | None = None

    @property
    def instruction(self) -> str:
        return self.spec_.instruction

    @property
    def raw_env(self) -> Any:
        """The underlying MetaWorld env (for perturbations and inspection)."""
        return self._env

    @property
    def perturbations(self) -> tuple[str, ...]:
        """Names of the perturbations applied to this env (from its task name and :meth:`perturb`)."""
        from apo.envs.perturbations import perturbation_name

        return tuple(perturbation_name(m) for m in self._applied)

    def perturb(self, *names: str) -> None:
        """Apply registered perturbations to this live env, e.g. ``env.perturb("texture", "lighting")``.

        Colours, lights and textures show from the next frame (edited textures are uploaded to the
        renderer), object ranges from the next ``reset``. A perturbation already applied is skipped,
        so applying one twice never compounds it. Unknown names raise an error listing the valid ones.
        """
        from apo.envs.perturbations import PERTURBATIONS

        self._apply(tuple(PERTURBATIONS.get(n) for n in names))

    def _apply(self, modifiers: tuple[Callable[[Any], None], ...]) -> None:
        model = self._env.model
        textures = model.tex_data.copy()
        for modify in modifiers:
            if modify not in self._applied:
                modify(self._env)
                self._applied.append(modify)
        for tid in range(model.ntex):
            adr = int(model.tex_adr[tid])
            size = int(model.tex_width[tid] * model.tex_height[tid] * model.tex_nchannel[tid])
            if not np.array_equal(model.tex_data[adr : adr + size], textures[adr : adr + size]):
                self._renderer.upload_texture(tid)

    def _obs(self, state: np.ndarray) -> dict[str, Any]:
        return {
            "image": self._renderer.render(self._env.data),
            "proprio": state[:PROPRIO_DIM].astype(np.float32),
            "instruction": self.spec_.instruction,
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(0, 2**31 - 1))
        self._env.seed(int(seed))
        state, _ = self._env.reset()
        # MetaWorld moves the goal site after its last forward pass: without this the first frame shows the
        # previous episode's goal marker (site_xpos is stale until the first step). Kinematics only: no dynamics.
        mujoco.mj_kinematics(self._env.model, self._env.data)
        self._t = 0
        self.state = state
        return self._obs(state), {"state": state.copy(), "success": False, "seed": int(seed)}

    def step(self, action: np.ndarray):
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"action must have shape ({ACTION_DIM},), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains NaN/inf: {action}")
        state, reward, _, _, info = self._env.step(np.clip(action, -1.0, 1.0))
        self._t += 1
        self.state = state
        success = bool(info["success"])
        terminated = success and self.config.terminate_on_success
        truncated = self._t >= self.max_steps and not terminated
        out_info = {"state": state.copy(), "success": success, "step": self._t}
        return self._obs(state), float(reward), terminated, truncated, out_info

    def render(self) -> np.ndarray:
        return self._renderer.render(self._env.data)

    def close(self) -> None:
        self._renderer.close()
        self._env.close()


def make_env(task: str, config: EnvConfig = EnvConfig()) -> MetaWorldEnv:
    return MetaWorldEnv(task, config)
