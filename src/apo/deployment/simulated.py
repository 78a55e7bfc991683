"""The simulated person: MetaWorld's scripted expert watches the policy and takes over.

Triggers (each can be disabled):
* ``no progress``: for ``no_progress_steps`` steps, neither has the dense reward beaten its best so far
  by ``progress_margin``, nor has the hand-to-object or the object-to-goal distance beaten its
  shortest so far by ``progress_distance`` metres (the distances count because some tasks' rewards
  stay flat while the expert approaches: on peg-insert-side the expert itself would be taken over
  at step 40 on reward alone);
* ``object lost``: the main object leaves the box ``object_bounds`` (about to fall off the table);
* ``object dropped`` (off by default): the main object, once lifted ``lift_height`` above where it lay
  at the episode's first step, is more than ``drop_distance`` from the hand: the gripper let it go
  before the goal. Without it a policy that drops the block on shelf-place carries on to the shelf
  empty-handed and is taken over only after the stall (docs/results.md, "Tenth loop"), so the K
  undesirable steps cover the stall, not the slip;
* ``object slipping`` (off by default): the main object, since it left the table, has slid down in the
  hand by more than ``slip_distance`` while still more than ``slip_goal_distance`` from its goal (a
  shallow grasp losing the block: 9 of the base's 12 shelf-place takeovers; docs/results.md,
  "Twelfth loop"), 35-44 steps before the no-progress trigger. The scripted expert keeps the gripper
  closed near the object and cannot re-grasp a slipping block, so after this trigger the person first
  opens the gripper and raises the hand for ``regrasp_steps`` steps, then drives with the expert
  (``regrasp_after='any'``: after every trigger, e.g. a hand closed on a missed pick-place puck;
  ``regrasp_after_per_task`` and ``no_progress_steps_per_task`` set it and the patience per task);
* ``divergence`` (off by default): the policy's xyz action differs from the expert's by more than
  ``divergence_threshold`` (L2) for ``divergence_steps`` consecutive steps. It also takes over from
  a policy that would succeed in its own way, which marks good motions as undesirable (docs/results.md,
  runs 5 and 6), so the default person steps in on signs of failure only.
After a trigger the person reacts within ``0..max_reaction_delay`` steps (seeded), drives with
the expert's actions, and hands back after ``hold_steps`` steps (``release="span"``) or, with
``release="agree"``, once the policy's proposals agree with the expert for ``agree_steps``
consecutive steps (at least ``min_hold_steps``, at most ``hold_steps``). No takeover after
success. Everything is deterministic given the episode seed.

Help requests (optional, off by default): given a ``help_signal`` (a callable returning True
while the robot asks for help, e.g. ``apo.deployment.console.HelpRequester``), the person can
take over when asked (``honour_requests``) and/or look only when asked (``watch="on_request"``:
triggers are checked only while a request is active, a takeover is pending or the person is in
control; what happens while the person looks away is not seen). ``watched_steps`` counts the
steps the person had to watch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from apo.deployment.sources import INTERVENTION_SOURCES, Decision, InterventionSource, StepContext
from apo.envs.experts import ScriptedExpert
from apo.envs.tasks import TASKS

OFF_TABLE = 0.01
"""Height (metres) above its first-step position at which the object counts as off the table (for slips)."""


@dataclass(frozen=True)
class SimulatedPersonConfig:
    divergence_threshold: float = 0.6
    """L2 distance between policy and expert xyz actions counted as diverging."""
    divergence_steps: int = 0
    """Consecutive diverging steps that trigger a takeover (0 disables: the person steps in on signs of
    failure only; runs 1-5 and the first loop in docs/results.md used 6)."""
    no_progress_steps: int = 40
    """Steps without progress (reward, or the distances of progress_distance) that trigger a takeover (0 disables)."""
    no_progress_steps_per_task: dict[str, int] = field(default_factory=dict)
    """Per-task no_progress_steps in place of the one above, e.g. ``pick-place-v3 10`` (a perturbed
    '<task>+<perturbation>' takes its original task's unless named itself). On pick-place 10 steps leave
    the scripted expert alone, on peg-insert-side and shelf-place they take it over
    (benchmarks/person_on_expert.py)."""
    progress_margin: float = 0.05
    """Improvement of the best dense reward that counts as progress."""
    progress_distance: float = 0.01
    """Shortening (metres) of the shortest hand-to-object or object-to-goal distance so far that also
    counts as progress (0: the reward alone, as in docs/results.md runs 1-6 and the first two loops)."""
    object_bounds: tuple[float, float, float, float, float, float] | None = (-0.45, 0.3, -0.05, 0.45, 1.0, 0.6)
    """Box (xmin, ymin, zmin, xmax, ymax, zmax) the main object must stay in (None disables)."""
    drop_distance: float = 0.0
    """Hand-to-object distance (metres) at which a lifted object counts as dropped (0 disables; 0.15
    leaves the scripted expert alone, 0.1 does not)."""
    slip_distance: float = 0.0
    """How far (metres) the object, once off the table, may slide down in the hand before the grasp counts
    as slipping (0 disables; 0.015: on the base's fresh shelf-place episodes the block slides at most 1.2 cm
    where no slip is seen; benchmarks/slip_rescues.py)."""
    slip_goal_distance: float = 0.1
    """A slip counts only while the object is farther than this (metres) from its goal: setting the block
    on the shelf pushes it up the fingers."""
    regrasp_steps: int = 12
    """After an object_slipping trigger: steps the person first spends opening the gripper and raising the
    hand (half of them) before driving with the expert."""
    regrasp_after: Literal["slip", "any"] = "slip"
    """Which takeovers start with those regrasp_steps: slip (object_slipping only) or any (every trigger;
    on pick-place the expert, taking over a hand closed on a missed puck, can keep pushing down closed)."""
    regrasp_after_per_task: dict[str, Literal["slip", "any"]] = field(default_factory=dict)
    """Per-task regrasp_after in place of the one above, e.g. ``pick-place-v3 any`` (named as in
    no_progress_steps_per_task). On a fourth goal-pin build any rescued 20 of 32 helped pick-place episodes
    (slip: 2) but 3 fewer on peg-insert-side and on shelf-place (docs/results.md, fifteenth loop)."""
    lift_height: float = 0.04
    """Height (metres) above its first-step position the object must have reached to count as lifted."""
    hold_steps: int = 20
    """Steps the person keeps control (maximum with release='agree')."""
    release: Literal["span", "agree"] = "span"
    """Hand back after hold_steps ('span') or once the policy agrees with the expert ('agree')."""
    min_hold_steps: int = 5
    """With release='agree': minimum steps in control."""
    agree_steps: int = 3
    """With release='agree': consecutive agreeing policy proposals needed to hand back."""
    max_reaction_delay: int = 2
    """The person reacts 0..max_reaction_delay steps after a trigger (seeded)."""
    max_takeovers: int | None = None
    """Cap on takeovers per episode (None: unlimited)."""
    honour_requests: bool = False
    """Take over (after the reaction delay) when the robot asks for help (needs a help signal)."""
    watch: Literal["always", "on_request"] = "always"
    """'always': watch every step; 'on_request': look only while the robot asks for help (needs a help signal)."""

    def __post_init__(self) -> None:
        if self.hold_steps < 1 or self.min_hold_steps < 1 or self.agree_steps < 1:
            raise ValueError("hold_steps, min_hold_steps and agree_steps must be >= 1")
        if min(self.divergence_steps, self.no_progress_steps, self.max_reaction_delay) < 0:
            raise ValueError("divergence_steps, no_progress_steps and max_reaction_delay must be >= 0")
        if self.drop_distance < 0 or self.lift_height <= 0:
            raise ValueError(f"drop_distance must be >= 0 (0 disables) and lift_height > 0 metres, got "
                             f"{self.drop_distance} and {self.lift_height}")
        if self.slip_distance < 0 or self.slip_goal_distance < 0 or self.regrasp_steps < 0:
            raise ValueError(f"slip_distance (0 disables), slip_goal_distance and regrasp_steps must be >= 0, got "
                             f"{self.slip_distance}, {self.slip_goal_distance} and {self.regrasp_steps}")
        for task in (*self.no_progress_steps_per_task, *self.regrasp_after_per_task):
            TASKS.get(task)  # an unknown task name is an error naming the valid ones
        for task, steps in self.no_progress_steps_per_task.items():
            if steps < 0:
                raise ValueError(f"no_progress_steps_per_task[{task!r}] must be >= 0 (0 disables), got {steps}")
        for task, after in self.regrasp_after_per_task.items():
            if after not in ("slip", "any"):
                raise ValueError(f"regrasp_after_per_task[{task!r}] must be 'slip' or 'any', got {after!r}")
        if self.progress_distance < 0:
            raise ValueError(f"progress_distance must be >= 0 metres (0: reward only), got {self.progress_distance}")
        if self.regrasp_after not in ("slip", "any"):
            raise ValueError(f"regrasp_after must be 'slip' or 'any', got {self.regrasp_after!r}")
        if self.release not in ("span", "agree"):
            raise ValueError(f"release must be 'span' or 'agree', got {self.release!r}")
        if self.watch not in ("always", "on_request"):
            raise ValueError(f"watch must be 'always' or 'on_request', got {self.watch!r}")


def _for_task(per_task: dict, task: str, default):
    """``per_task``'s value for ``task``, else for its original task (``task`` without '+<perturbation>'),
    else ``default``."""
    return per_task.get(task, per_task.get(task.split("+")[0], default))


@INTERVENTION_SOURCES.register("simulated")
class SimulatedPerson(InterventionSource):
    name = "simulated"

    def __init__(self, task: str, config: SimulatedPersonConfig = SimulatedPersonConfig(),
                 help_signal: Callable[[], bool] | None = None):
        if config.watch == "on_request" and help_signal is None:
            raise ValueError("watch='on_request' needs a help signal (e.g. a HelpRequester) to know when to look")
        self.cfg = config
        self.help_signal = help_signal
        """Returns True while the robot asks for help (None: it never asks)."""
        self.expert = ScriptedExpert(task)
        self.no_progress_steps = _for_task(config.no_progress_steps_per_task, task, config.no_progress_steps)
        """This task's no_progress_steps."""
        self.regrasp_after = _for_task(config.regrasp_after_per_task, task, config.regrasp_after)
        """This task's regrasp_after."""
        self.reset(0)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng([seed, 7919])
        self.diverging = 0
        self.best_reward = -np.inf
        self.best_distances = np.full(2, np.inf)  # shortest hand-object and object-goal distances
        self.since_progress = 0
        self.start_height: float | None = None  # the object's height at the first step
        self.lifted = False  # the object has been lifted lift_height above start_height
        self.grip_offset: float | None = None  # object height minus hand height when it left the table
        self.regrasping = 0  # steps left opening the gripper before the expert drives
        self.pending: int | None = None  # steps until a triggered takeover starts
        self.trigger: str | None = None
        self.in_control = 0  # steps held in the current takeover (0: not in control)
        self.agreeing = 0
        self.takeovers = 0
        self.triggers: list[tuple[int, str]] = []
        self.watched_steps = 0
        """Steps the person watched (every step with watch='always')."""

    def _diverges(self, policy_action: np.ndarray, expert_action: np.ndarray) -> bool:
        return float(np.linalg.norm(policy_action[:3] - expert_action[:3])) > self.cfg.divergence_threshold

    @staticmethod
    def _distances(state: np.ndarray) -> np.ndarray:
        """Hand-to-object and object-to-goal distances (MetaWorld state: hand 0:3, object 4:7, goal 36:39)."""
        hand, obj, goal = state[0:3], state[4:7], state[36:39]
        return np.array([np.linalg.norm(hand - obj), np.linalg.norm(obj - goal)])

    def _progressed(self, ctx: StepContext) -> bool:
        """Whether this step beats a best-so-far progress measure by its margin (then it becomes the best)."""
        c = self.cfg
        progressed = False
        if ctx.reward > self.best_reward + c.progress_margin:
            self.best_reward, progressed = ctx.reward, True
        if c.progress_distance > 0:
            d = self._distances(ctx.state)
            closer = d < self.best_distances - c.progress_distance
            self.best_distances = np.where(closer, d, self.best_distances)
            progressed = progressed or bool(closer.any())
        return progressed

    def _dropped(self, state: np.ndarray) -> bool:
        """Whether the object, lifted since the last restart, is now beyond drop_distance from the hand."""
        c = self.cfg
        if not c.drop_distance:
            return False
        self.lifted = self.lifted or float(state[6]) > self.start_height + c.lift_height
        return self.lifted and float(np.linalg.norm(state[0:3] - state[4:7])) > c.drop_distance

    def _slipping(self, state: np.ndarray) -> bool:
        """Whether the object, off the table since the last restart, has slid down in the hand by more than
        slip_distance while still far from its goal."""
        c = self.cfg
        if not c.slip_distance:
            return False
        offset = float(state[6] - state[2])
        if self.grip_offset is None:
            if float(state[6]) > self.start_height + OFF_TABLE:
                self.grip_offset = offset
            return False
        far = float(np.linalg.norm(state[4:7] - state[36:39])) > c.slip_goal_distance
        return far and self.grip_offset - offset > c.slip_distance

    def _restart_progress(self, ctx: StepContext) -> None:
        """Count progress from this step on (after handing back or looking away)."""
        self.diverging, self.since_progress = 0, 0
        self.lifted = False  # a drop counts only if the object is lifted again
        self.grip_offset = None  # and a slip only once it leaves the table again
        self.best_reward = ctx.reward
        self.best_distances = self._distances(ctx.state)

    def _check_triggers(self, ctx: StepContext, expert_action: np.ndarray) -> str | None:
        c = self.cfg
        self.diverging = self.diverging + 1 if self._diverges(ctx.policy_action, expert_action) else 0
        self.since_progress = 0 if self._progressed(ctx) else self.since_progress + 1
        if c.object_bounds is not None:
            lo, hi = np.array(c.object_bounds[:3]), np.array(c.object_bounds[3:])
            obj = ctx.state[4:7]
            if np.any(obj < lo) or np.any(obj > hi):
                return "object_lost"
        if self._dropped(ctx.state):
            return "object_dropped"
        if self._slipping(ctx.state):
            return "object_slipping"
        if c.divergence_steps and self.diverging >= c.divergence_steps:
            return "divergence"
        if self.no_progress_steps and self.since_progress >= self.no_progress_steps:
            return "no_progress"
        return None

    def _look_away(self, ctx: StepContext) -> None:
        """Not watching (watch='on_request', no request): nothing of this step is seen."""
        self._restart_progress(ctx)

    def _person_action(self, expert_action: np.ndarray) -> np.ndarray:
        """The expert's action, or while re-grasping (after a slip, or any trigger with regrasp_after='any'):
        open the gripper (raising the hand in the first half of regrasp_steps)."""
        if not self.regrasping:
            return expert_action
        rise = 0.5 if self.regrasping > self.cfg.regrasp_steps // 2 else 0.0
        self.regrasping -= 1
        action = np.zeros_like(expert_action)
        action[2], action[3] = rise, -1.0
        return action

    def decide(self, ctx: StepContext) -> Decision:
        c = self.cfg
        asked = self.help_signal is not None and bool(self.help_signal())
        expert_action = self.expert.act(ctx.state)
        if self.start_height is None:
            self.start_height = float(ctx.state[6])
        watching = c.watch == "always" or asked or self.in_control > 0 or self.pending is not None
        self.watched_steps += watching
        if self.in_control:
            self.in_control += 1
            self.agreeing = 0 if self._diverges(ctx.policy_action, expert_action) else self.agreeing + 1
            if c.release == "span":
                release = self.in_control > c.hold_steps
            else:
                release = self.in_control > c.hold_steps or (
                    self.in_control > c.min_hold_steps and self.agreeing >= c.agree_steps
                )
            if not release:
                return Decision(action=self._person_action(expert_action))
            self.in_control, self.regrasping = 0, 0
            self._restart_progress(ctx)
            return Decision()  # hand back: the policy acts this step
        if ctx.success or (c.max_takeovers is not None and self.takeovers >= c.max_takeovers):
            return Decision()
        if self.pending is None:
            if watching:
                trigger = self._check_triggers(ctx, expert_action)
            else:
                trigger = None
                self._look_away(ctx)
            if trigger is None and asked and c.honour_requests:
                trigger = "help_request"
            if trigger is not None:
                self.trigger = trigger
                self.pending = int(self.rng.integers(0, c.max_reaction_delay + 1))
                self.triggers.append((ctx.t, trigger))
        if self.pending is not None:
            if self.pending > 0:
                self.pending -= 1
                return Decision()
            self.pending = None
            self.in_control, self.agreeing = 1, 0
            self.takeovers += 1
            regrasp = self.regrasp_after == "any" or self.trigger == "object_slipping"
            self.regrasping = c.regrasp_steps if regrasp else 0
            return Decision(action=self._person_action(expert_action))
        return Decision()


def triggers_on_expert(task: str, seed: int, config: SimulatedPersonConfig) -> list[tuple[int, str]]:
    """The person's (step, trigger) pairs while MetaWorld's scripted expert itself drives one episode
    (env seed ``seed``, no reaction delay), up to the first trigger: a person who takes over the expert
    marks good steps as undesirable. Renders 16 px images (the triggers read the simulator state only)."""
    from apo.envs import EnvConfig, make_env

    env, expert = make_env(task, EnvConfig(image_size=16)), ScriptedExpert(task)
    person = SimulatedPerson(task, replace(config, max_reaction_delay=0))
    try:
        _, info = env.reset(seed=seed)
        person.reset(seed)
        reward, success, t, done = 0.0, False, 0, False
        while not done and not person.triggers:
            action = expert.act(info["state"])
            person.decide(StepContext(t=t, obs={}, state=info["state"], policy_action=action, reward=reward,
                                      success=success))
            _, reward, terminated, truncated, info = env.step(action)
            success, t, done = info["success"], t + 1, terminated or truncated
    finally:
        env.close()
    return person.triggers
