"""BrowserDevice: an :class:`~apo.deployment.devices.InputDevice` fed by the console's websocket.

The page sends the set of held keys on every key press/release and as a heartbeat every 100 ms
(``{"type": "keys", "pressed": ["space", "w"]}``), and button clicks
(``{"type": "button", "name": "success" | "failure" | "stop" | "gripper"}``). The key map is the
keyboard's (``keys_to_state``): hold SPACE to take over, W/S A/D R/F move, G toggles the gripper,
ENTER / BACKSPACE mark success / failure, ESC stops the episode.

Polled once per control step. A key pressed since the last poll counts even if it was released
before it (a tap is never lost). ``timestamp`` is the time of the last message, so wrapped in a
:class:`~apo.deployment.devices.TeleopSource` a browser that stops sending (frozen tab, lost
network) is stale after ``stale_after_s`` and a closed one is disconnected: either way the robot
holds still and nothing is recorded.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from apo.deployment.devices import DeviceState, InputDevice, keys_to_state

KEYS = frozenset({"space", "w", "a", "s", "d", "r", "f", "g", "enter", "backspace", "esc"})
"""Key names the device understands (the page sends these)."""
ALIASES = {" ": "space", "spacebar": "space", "escape": "esc", "return": "enter"}
BUTTONS = {"success": "enter", "failure": "backspace", "stop": "esc"}
"""Console buttons and the key each one stands for."""


def key_name(key: str) -> str | None:
    k = str(key).lower()
    k = ALIASES.get(k, k)
    return k if k in KEYS else None


class BrowserDevice(InputDevice):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connected = False
        self._pressed: set[str] = set()
        self._latched: set[str] = set()  # pressed since the last poll
        self._gripper = False
        self._last = 0.0

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    def connect(self, now: float | None = None) -> None:
        """A driver's page connected: no key held, fresh timestamp (the gripper state is kept)."""
        with self._lock:
            self._connected = True
            self._pressed.clear()
            self._latched.clear()
            self._last = time.monotonic() if now is None else now

    def disconnect(self) -> None:
        with self._lock:
            self._connected = False
            self._pressed.clear()
            self._latched.clear()

    def handle(self, msg: dict[str, Any], now: float | None = None) -> None:
        """Apply one message from the page; raises ValueError on a malformed one."""
        if not isinstance(msg, dict):
            raise ValueError(f"message must be an object, got {type(msg).__name__}")
        kind = msg.get("type")
        with self._lock:
            if kind == "keys":
                pressed = msg.get("pressed", [])
                if not isinstance(pressed, list):
                    raise ValueError("'pressed' must be a list of key names")
                keys = {k for k in (key_name(p) for p in pressed) if k is not None}
                new = keys - self._pressed
                if "g" in new:
                    self._gripper = not self._gripper
                self._latched |= new
                self._pressed = keys
            elif kind == "button":
                name = msg.get("name")
                if name == "gripper":
                    self._gripper = not self._gripper
                elif name in BUTTONS:
                    self._latched.add(BUTTONS[name])
                else:
                    raise ValueError(f"unknown button {name!r}")
            elif kind != "ping":
                raise ValueError(f"unknown device message type {kind!r}")
            self._last = time.monotonic() if now is None else now

    def poll(self) -> DeviceState:
        with self._lock:
            if not self._connected:
                return DeviceState(connected=False)
            state = keys_to_state(self._pressed | self._latched, self._gripper)
            self._latched.clear()
            state.timestamp = self._last
            return state
