"""Teleoperation devices: the key map, TeleopSource safety rules, and actionable errors when a
device or its package is missing (simulated with fake / blocked modules, so it is deterministic)."""

from __future__ import annotations

import sys
import time
import types

import numpy as np
import pytest

from apo.deployment import devices
from apo.deployment.devices import (
    DeviceNotFoundError, DeviceState, GamepadDevice, InputDevice, KeyboardDevice, ScriptedDevice, TeleopSource,
    keys_to_state,
)
from apo.deployment.sources import INTERVENTION_SOURCES, StepContext


def ctx(t: int = 0) -> StepContext:
    return StepContext(t=t, obs={}, state=np.zeros(39), policy_action=np.zeros(4, np.float32), reward=0.0,
                       success=False)


# ----- key map -----

@pytest.mark.parametrize("key,axis,sign", [("w", 1, 1), ("s", 1, -1), ("a", 0, -1), ("d", 0, 1), ("r", 2, 1), ("f", 2, -1)])
def test_key_motion_axes_and_signs(key, axis, sign):
    st = keys_to_state({key}, gripper_closed=False)
    expect = np.zeros(3, np.float32)
    expect[axis] = sign
    np.testing.assert_array_equal(st.motion, expect)
    assert not st.engaged and st.mark is None and not st.stop


def test_key_combinations():
    st = keys_to_state({"w", "d", "r"}, gripper_closed=True)
    np.testing.assert_array_equal(st.motion, [1, 1, 1])
    assert st.gripper_closed
    # opposite keys cancel
    np.testing.assert_array_equal(keys_to_state({"w", "s", "a"}, False).motion, [-1, 0, 0])
    # unknown keys do nothing
    st = keys_to_state({"x", "q", "g"}, False)
    np.testing.assert_array_equal(st.motion, [0, 0, 0])
    assert not st.engaged and st.mark is None and not st.stop and st.connected


def test_space_engages_and_marks_and_stop():
    assert keys_to_state({"space"}, False).engaged
    assert not keys_to_state(set(), False).engaged
    assert keys_to_state({"enter"}, False).mark == "success"
    assert keys_to_state({"backspace"}, False).mark == "failure"
    assert keys_to_state({"esc"}, False).stop
    assert not keys_to_state({"space", "w"}, False).stop


# ----- TeleopSource -----

def test_teleop_engaged_gives_motion_and_gripper():
    dev = ScriptedDevice([
        DeviceState(engaged=True, motion=np.array([0.5, -1.0, 0.25], np.float32), gripper_closed=True),
        DeviceState(engaged=True, motion=np.array([0.0, 1.0, 0.0], np.float32), gripper_closed=False),
    ])
    src = TeleopSource(dev)
    d1 = src.decide(ctx(0))
    assert not d1.paused
    np.testing.assert_allclose(d1.action, [0.5, -1.0, 0.25, 1.0])
    assert d1.action.dtype == np.float32 and d1.action.shape == (4,)
    d2 = src.decide(ctx(1))
    np.testing.assert_allclose(d2.action, [0.0, 1.0, 0.0, -1.0])


def test_teleop_speed_scales_and_clips():
    dev = ScriptedDevice([DeviceState(engaged=True, motion=np.array([0.5, -0.75, 1.0], np.float32))])
    d = TeleopSource(dev, speed=2.0).decide(ctx())
    np.testing.assert_allclose(d.action, [1.0, -1.0, 1.0, -1.0])


def test_teleop_not_engaged_lets_the_policy_act_but_forwards_marks():
    dev = ScriptedDevice([
        DeviceState(engaged=False, motion=np.ones(3, np.float32), gripper_closed=True),
        DeviceState(engaged=False, mark="success", stop=True),
    ])
    src = TeleopSource(dev)
    d = src.decide(ctx(0))
    assert d.action is None and not d.paused and d.mark is None and not d.stop
    d = src.decide(ctx(1))
    assert d.action is None and not d.paused and d.mark == "success" and d.stop


def test_teleop_disconnected_pauses():
    dev = ScriptedDevice([DeviceState(engaged=True, motion=np.ones(3, np.float32)), DeviceState(connected=False)])
    src = TeleopSource(dev)
    assert src.decide(ctx(0)).action is not None
    d = src.decide(ctx(1))
    assert d.paused and d.action is None
    # exhausted scripted device = disconnected: stays paused, the last command is never replayed
    d = src.decide(ctx(2))
    assert d.paused and d.action is None


class _FrozenDevice(InputDevice):
    """Reports the same engaged state with a timestamp ``age`` seconds in the past."""

    def __init__(self, age: float):
        self.age = age
        self.closed = False

    def poll(self) -> DeviceState:
        return DeviceState(engaged=True, motion=np.array([1.0, 0.0, 0.0], np.float32), gripper_closed=True,
                           timestamp=time.monotonic() - self.age)

    def close(self) -> None:
        self.closed = True


def test_teleop_stale_state_pauses_and_never_replays():
    src = TeleopSource(_FrozenDevice(age=2.0), stale_after_s=0.5)
    for t in range(3):
        d = src.decide(ctx(t))
        assert d.paused and d.action is None
    fresh = TeleopSource(_FrozenDevice(age=0.0), stale_after_s=0.5)
    d = fresh.decide(ctx())
    assert not d.paused
    np.testing.assert_allclose(d.action, [1, 0, 0, 1])


def test_teleop_close_closes_device():
    dev = _FrozenDevice(0.0)
    TeleopSource(dev).close()
    assert dev.closed


# ----- missing packages / devices -----

def test_keyboard_without_pynput_raises_actionable_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynput", None)  # makes `import pynput` raise ImportError
    with pytest.raises(DeviceNotFoundError) as e:
        KeyboardDevice()
    msg = str(e.value)
    assert "pynput" in msg and "pip install" in msg and "--source simulated" in msg
    with pytest.raises(DeviceNotFoundError):
        INTERVENTION_SOURCES.get("keyboard")("pick-place-v3")


def test_keyboard_listener_failure_raises_actionable_error(monkeypatch):
    # pynput imports but its backend fails (no display): also a DeviceNotFoundError
    fake = types.ModuleType("pynput")

    def boom(name):
        raise RuntimeError("no X display")

    fake.__getattr__ = boom
    monkeypatch.setitem(sys.modules, "pynput", fake)
    with pytest.raises(DeviceNotFoundError, match="display"):
        KeyboardDevice()


def test_gamepad_without_pygame_raises_actionable_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pygame", None)
    with pytest.raises(DeviceNotFoundError) as e:
        GamepadDevice()
    assert "pygame" in str(e.value) and "pip install" in str(e.value)
    with pytest.raises(DeviceNotFoundError):
        INTERVENTION_SOURCES.get("gamepad")("pick-place-v3")


class _FakeJoystick:
    def __init__(self, index):
        self.axes = [0.0] * 6
        self.buttons = [0] * 8
        self.ok = True

    def get_axis(self, i):
        return self.axes[i]

    def get_button(self, i):
        return self.buttons[i]

    def get_init(self):
        return self.ok


def _fake_pygame(count: int):
    pg = types.ModuleType("pygame")
    pg.JOYDEVICEREMOVED = 1541
    pg.events = []
    pg.sticks = []
    pg.init = lambda: None

    def make(i):
        js = _FakeJoystick(i)
        pg.sticks.append(js)
        return js

    pg.joystick = types.SimpleNamespace(init=lambda: None, get_count=lambda: count, Joystick=make, quit=lambda: None)
    pg.event = types.SimpleNamespace(get=lambda: [pg.events.pop(0)] if pg.events else [])
    return pg


def test_gamepad_not_plugged_in_raises_actionable_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pygame", _fake_pygame(count=0))
    with pytest.raises(DeviceNotFoundError) as e:
        GamepadDevice()
    msg = str(e.value)
    assert "no gamepad #0" in msg and "--source" in msg
    monkeypatch.setitem(sys.modules, "pygame", _fake_pygame(count=1))
    with pytest.raises(DeviceNotFoundError, match="#1"):
        GamepadDevice(index=1)


def test_gamepad_mapping_with_fake_pygame(monkeypatch):
    pg = _fake_pygame(count=1)
    monkeypatch.setitem(sys.modules, "pygame", pg)
    dev = GamepadDevice(deadzone=0.1)
    js = pg.sticks[0]
    st = dev.poll()
    assert st.connected and not st.engaged and not st.gripper_closed
    np.testing.assert_array_equal(st.motion, [0, 0, 0])
    js.axes[0], js.axes[1], js.axes[4] = 0.5, 0.5, -0.8
    js.buttons[5] = 1
    st = dev.poll()
    assert st.engaged
    np.testing.assert_allclose(st.motion, [0.5, -0.5, 0.8])  # stick y is inverted
    js.axes[0] = 0.05  # inside the deadzone
    assert dev.poll().motion[0] == 0.0
    # A toggles the gripper on the press edge only
    js.buttons[0] = 1
    assert dev.poll().gripper_closed
    assert dev.poll().gripper_closed  # still held: no second toggle
    js.buttons[0] = 0
    assert dev.poll().gripper_closed
    js.buttons[0] = 1
    assert not dev.poll().gripper_closed
    js.buttons[7] = 1
    assert dev.poll().mark == "success"
    js.buttons[7], js.buttons[6], js.buttons[1] = 0, 1, 1
    st = dev.poll()
    assert st.mark == "failure" and st.stop
    # unplugged -> disconnected -> the source pauses
    pg.events.append(types.SimpleNamespace(type=pg.JOYDEVICEREMOVED))
    assert not dev.poll().connected
    js.ok = False
    assert TeleopSource(dev).decide(ctx()).paused


def test_keyboard_device_with_fake_pynput(monkeypatch):
    class Listener:
        def __init__(self, on_press, on_release):
            self.on_press, self.on_release = on_press, on_release
            self.alive = False

        def start(self):
            self.alive = True

        def stop(self):
            self.alive = False

        def is_alive(self):
            return self.alive

    pynput = types.ModuleType("pynput")
    pynput.keyboard = types.SimpleNamespace(Listener=Listener)
    monkeypatch.setitem(sys.modules, "pynput", pynput)
    dev = KeyboardDevice()
    lst = dev._listener
    char = lambda c: types.SimpleNamespace(char=c)  # noqa: E731
    named = lambda n: types.SimpleNamespace(char=None, name=n)  # noqa: E731
    lst.on_press(named("space"))
    lst.on_press(char("W"))
    st = dev.poll()
    assert st.engaged and not st.gripper_closed
    np.testing.assert_array_equal(st.motion, [0, 1, 0])
    lst.on_press(char("g"))
    lst.on_press(char("g"))  # auto-repeat while held: no second toggle
    assert dev.poll().gripper_closed
    lst.on_release(char("g"))
    lst.on_release(char("w"))
    st = dev.poll()
    assert st.gripper_closed and st.engaged
    np.testing.assert_array_equal(st.motion, [0, 0, 0])
    src = TeleopSource(dev)
    np.testing.assert_allclose(src.decide(ctx()).action, [0, 0, 0, 1])
    lst.on_release(named("space"))
    assert src.decide(ctx()).action is None
    src.close()
    assert src.decide(ctx()).paused  # listener stopped -> disconnected


def test_module_imports_without_device_packages():
    # the module itself must not import pynput / pygame at import time
    assert "pynput" not in vars(devices) and "pygame" not in vars(devices)
