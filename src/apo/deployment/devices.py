"""Teleoperation input devices (keyboard, gamepad) and the source that turns them into takeovers.

Devices are polled once per control step and report a :class:`DeviceState`. Real devices are
imported lazily, so this module imports (and is unit-tested with :class:`ScriptedDevice`) on a
machine without a keyboard hook, a gamepad or a display.

Key map (keyboard, pynput):
  hold SPACE   take over (release to hand control back to the policy)
  W / S        +y / -y      A / D   -x / +x      R / F   +z / -z
  G            toggle gripper (close / open)
  ENTER        mark the episode a success      BACKSPACE   mark it a failure
  ESC          stop the episode
Gamepad (pygame, SDL layout): hold RB (button 5) to take over; left stick x/y moves in x/y,
right stick y moves in z; A (button 0) toggles the gripper; START (7) marks success, BACK (6)
marks failure, B (1) stops the episode.

Safety: a device that disconnects (or stops reporting for ``stale_after_s``) pauses the robot:
it holds still and nothing is recorded, never replaying the last command.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from apo.deployment.sources import INTERVENTION_SOURCES, Decision, InterventionSource, StepContext


class DeviceNotFoundError(RuntimeError):
    """The requested input device is not available; the message says what to install or plug in."""


@dataclass
class DeviceState:
    connected: bool = True
    engaged: bool = False
    """Takeover button held."""
    motion: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    """Desired xyz motion in [-1, 1]^3."""
    gripper_closed: bool = False
    mark: str | None = None
    stop: bool = False
    timestamp: float = field(default_factory=time.monotonic)


class InputDevice(ABC):
    @abstractmethod
    def poll(self) -> DeviceState: ...

    def close(self) -> None:
        pass


class ScriptedDevice(InputDevice):
    """A device that replays a list of states (for tests and demos); disconnects when exhausted."""

    def __init__(self, states: Iterable[DeviceState]):
        self._states = list(states)
        self._i = 0

    def poll(self) -> DeviceState:
        if self._i >= len(self._states):
            return DeviceState(connected=False)
        s = self._states[self._i]
        self._i += 1
        s.timestamp = time.monotonic()
        return s


_KEY_MOTION = {"w": (1, 1), "s": (1, -1), "a": (0, -1), "d": (0, 1), "r": (2, 1), "f": (2, -1)}
"""key -> (axis, sign) of the motion it commands (W/S: +-y, A/D: -+x, R/F: +-z)."""


def keys_to_state(pressed: set[str], gripper_closed: bool) -> DeviceState:
    """Pure mapping from the set of held keys to a device state (see the key map above)."""
    motion = np.zeros(3, np.float32)
    for key in pressed:
        if key in _KEY_MOTION:
            axis, sign = _KEY_MOTION[key]
            motion[axis] += sign
    return DeviceState(
        engaged="space" in pressed, motion=np.clip(motion, -1, 1), gripper_closed=gripper_closed,
        mark="success" if "enter" in pressed else "failure" if "backspace" in pressed else None,
        stop="esc" in pressed,
    )


class KeyboardDevice(InputDevice):
    def __init__(self) -> None:
        try:
            from pynput import keyboard
        except Exception as e:  # ImportError, or no display for the X backend
            raise DeviceNotFoundError(
                f"keyboard teleoperation needs pynput and a display ({e}). Install it with "
                "`pip install 'apo[teleop]'` and run in a desktop session, or use `--source simulated`."
            ) from e
        self._pressed: set[str] = set()
        self._gripper = False
        self._lock = threading.Lock()

        def name(key) -> str:
            return (getattr(key, "char", None) or getattr(key, "name", "") or "").lower()

        def on_press(key) -> None:
            with self._lock:
                k = name(key)
                if k == "g" and "g" not in self._pressed:
                    self._gripper = not self._gripper
                self._pressed.add(k)

        def on_release(key) -> None:
            with self._lock:
                self._pressed.discard(name(key))

        self._listener = keyboard.Listener(on_press=on_press, on_release=on_release)
        self._listener.start()

    def poll(self) -> DeviceState:
        if not self._listener.is_alive():
            return DeviceState(connected=False)
        with self._lock:
            return keys_to_state(set(self._pressed), self._gripper)

    def close(self) -> None:
        self._listener.stop()


class GamepadDevice(InputDevice):
    def __init__(self, index: int = 0, deadzone: float = 0.1) -> None:
        try:
            import pygame
        except ImportError as e:
            raise DeviceNotFoundError("gamepad teleoperation needs pygame: `pip install 'apo[teleop]'`") from e
        pygame.init()
        pygame.joystick.init()
        if pygame.joystick.get_count() <= index:
            raise DeviceNotFoundError(
                f"no gamepad #{index} found ({pygame.joystick.get_count()} connected). Plug one in, "
                "or use `--source keyboard` / `--source simulated`."
            )
        self._pg = pygame
        self._js = pygame.joystick.Joystick(index)
        self._deadzone = deadzone
        self._gripper = False
        self._a_was_down = False

    def poll(self) -> DeviceState:
        pg = self._pg
        for ev in pg.event.get():
            if ev.type == getattr(pg, "JOYDEVICEREMOVED", -1):
                return DeviceState(connected=False)
        if not self._js.get_init():
            return DeviceState(connected=False)

        def axis(i: int) -> float:
            v = self._js.get_axis(i)
            return 0.0 if abs(v) < self._deadzone else float(v)

        a_down = bool(self._js.get_button(0))
        if a_down and not self._a_was_down:
            self._gripper = not self._gripper
        self._a_was_down = a_down
        return DeviceState(
            engaged=bool(self._js.get_button(5)),
            motion=np.array([axis(0), -axis(1), -axis(4)], np.float32),
            gripper_closed=self._gripper,
            mark="success" if self._js.get_button(7) else "failure" if self._js.get_button(6) else None,
            stop=bool(self._js.get_button(1)),
        )

    def close(self) -> None:
        self._pg.joystick.quit()


class TeleopSource(InterventionSource):
    """A person at an input device: engaged -> their action; disconnected or stale -> hold still."""

    name = "teleop"

    def __init__(self, device: InputDevice, speed: float = 1.0, stale_after_s: float = 0.5):
        self.device = device
        self.speed = speed
        self.stale_after_s = stale_after_s

    def decide(self, ctx: StepContext) -> Decision:
        st = self.device.poll()
        if not st.connected or time.monotonic() - st.timestamp > self.stale_after_s:
            return Decision(paused=True)
        if not st.engaged:
            return Decision(mark=st.mark, stop=st.stop)
        action = np.zeros(4, np.float32)
        action[:3] = np.clip(st.motion * self.speed, -1, 1)
        action[3] = 1.0 if st.gripper_closed else -1.0
        return Decision(action=action, mark=st.mark, stop=st.stop)

    def close(self) -> None:
        self.device.close()


@INTERVENTION_SOURCES.register("keyboard")
def keyboard_source(task: str) -> TeleopSource:
    return TeleopSource(KeyboardDevice())


@INTERVENTION_SOURCES.register("gamepad")
def gamepad_source(task: str) -> TeleopSource:
    return TeleopSource(GamepadDevice())
