"""Task registry: MetaWorld v3 tasks with a natural-language instruction and a step cap.

The development suite is registered explicitly below. Any other MetaWorld v3 task name
(e.g. ``"button-press-v3"``) also works: an entry is built on the fly with an instruction
derived from its name, and so does a perturbed variant ``"<task>+<perturbation>"`` (see
``apo.envs.perturbations``). Unknown names raise an error listing every valid name.

To add a task (or a variant of one) register a :class:`TaskSpec`::

    TASKS.add("my-task", TaskSpec(metaworld_name="drawer-open-v3", instruction="open the drawer"))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from apo.registry import Registry


@dataclass(frozen=True)
class TaskSpec:
    metaworld_name: str
    """MetaWorld v3 environment name, e.g. ``pick-place-v3``."""
    instruction: str
    """The natural-language instruction given to the policy."""
    max_steps: int = 200
    """Episode step cap (MetaWorld's own cap is 500)."""
    modifiers: tuple[Callable[[Any], None], ...] = field(default=(), compare=False)
    """Functions applied to the raw MetaWorld env after construction (for registered variants,
    e.g. perturbations of colours or object ranges)."""

    def __post_init__(self) -> None:
        if not self.instruction.strip():
            raise ValueError(f"task {self.metaworld_name!r}: instruction must not be empty")
        if not 1 <= self.max_steps <= 500:
            raise ValueError(f"task {self.metaworld_name!r}: max_steps must be in [1, 500], got {self.max_steps}")


def _metaworld_v3_names() -> list[str]:
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

    suffix = "-goal-observable"
    return sorted(n[: -len(suffix)] for n in ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE)


def _spec_from_metaworld_name(name: str) -> TaskSpec | None:
    if "+" in name:  # a perturbed variant, e.g. "pick-place-v3+texture"
        from apo.envs.perturbations import perturbed_spec

        return perturbed_spec(name, TASKS.get)
    if name not in _metaworld_v3_names():
        return None
    words = name.removesuffix("-v3").replace("-", " ")
    return TaskSpec(metaworld_name=name, instruction=f"{words}", max_steps=300)


TASKS: Registry[TaskSpec] = Registry("task")
TASKS.set_fallback(_spec_from_metaworld_name, _metaworld_v3_names)

# The development suite (step caps are ~2.5x the scripted expert's mean episode length).
TASKS.add("coffee-push-v3", TaskSpec("coffee-push-v3", "push the mug under the coffee machine", max_steps=150))
TASKS.add("peg-insert-side-v3", TaskSpec("peg-insert-side-v3", "insert the peg into the hole from the side", max_steps=250))
TASKS.add("pick-place-v3", TaskSpec("pick-place-v3", "pick up the puck and place it at the goal", max_steps=150))
TASKS.add("shelf-place-v3", TaskSpec("shelf-place-v3", "place the block on the shelf", max_steps=250))

DEV_SUITE: tuple[str, ...] = ("coffee-push-v3", "peg-insert-side-v3", "pick-place-v3", "shelf-place-v3")


def get_task(name: str) -> TaskSpec:
    return TASKS.get(name)
