"""Console units: BrowserDevice, the latest-only slot, bind/token rules, the server's auth and roles."""

from __future__ import annotations

import time

import numpy as np
import pytest

from apo.deployment.console.buffer import LatestSlot
from apo.deployment.console.device import BrowserDevice, key_name
from apo.deployment.console.server import InsecureBindError, check_bind, is_loopback
from apo.deployment.console.session import ConsoleSession
from apo.deployment.devices import TeleopSource
from apo.deployment.sources import StepContext

TOKEN = "0123456789abcdef-token"
WS = "ws://127.0.0.1:8000/ws"


def ctx(t: int = 0) -> StepContext:
    return StepContext(t, {}, np.zeros(39), np.zeros(4, np.float32), 0.0, False)


# ----- BrowserDevice -----

def test_key_names():
    assert key_name(" ") == "space" and key_name("Escape") == "esc" and key_name("W") == "w"
    assert key_name("x") is None and key_name("Shift") is None


def test_browser_device_maps_messages_to_device_state():
    dev = BrowserDevice()
    assert not dev.poll().connected  # nobody connected yet
    dev.connect()
    st = dev.poll()
    assert st.connected and not st.engaged and not st.gripper_closed and st.mark is None and not st.stop
    dev.handle({"type": "keys", "pressed": ["space", "w", "d", "r", "bogus"]})
    st = dev.poll()
    assert st.engaged
    np.testing.assert_array_equal(st.motion, [1, 1, 1])
    dev.handle({"type": "keys", "pressed": ["space", "s", "a", "f"]})
    np.testing.assert_array_equal(dev.poll().motion, [-1, -1, -1])
    # G toggles on the press edge only (holding it does not toggle again)
    dev.handle({"type": "keys", "pressed": ["g"]})
    dev.handle({"type": "keys", "pressed": ["g"]})
    assert dev.poll().gripper_closed
    dev.handle({"type": "keys", "pressed": []})
    dev.handle({"type": "keys", "pressed": ["g"]})
    assert not dev.poll().gripper_closed
    # a tap between two polls is not lost (latched until the next poll), then it is gone
    dev.handle({"type": "keys", "pressed": ["enter"]})
    dev.handle({"type": "keys", "pressed": []})
    assert dev.poll().mark == "success"
    assert dev.poll().mark is None
    dev.handle({"type": "keys", "pressed": ["space"]})
    dev.handle({"type": "keys", "pressed": []})
    assert dev.poll().engaged and not dev.poll().engaged
    # buttons stand for the same keys
    dev.handle({"type": "button", "name": "failure"})
    assert dev.poll().mark == "failure"
    dev.handle({"type": "button", "name": "stop"})
    assert dev.poll().stop
    dev.handle({"type": "button", "name": "gripper"})
    assert dev.poll().gripper_closed
    with pytest.raises(ValueError):
        dev.handle({"type": "keys", "pressed": "space"})
    with pytest.raises(ValueError):
        dev.handle({"type": "button", "name": "self-destruct"})
    with pytest.raises(ValueError):
        dev.handle({"type": "nonsense"})
    dev.disconnect()
    assert not dev.poll().connected


def test_browser_device_in_teleop_source_disconnected_or_stale_pauses():
    dev = BrowserDevice()
    src = TeleopSource(dev, stale_after_s=0.5)
    assert src.decide(ctx()).paused  # never connected
    dev.connect()
    dev.handle({"type": "keys", "pressed": ["space", "w", "g"]})
    d = src.decide(ctx())
    assert not d.paused
    np.testing.assert_array_equal(d.action, [0, 1, 0, 1])  # +y, gripper closed
    dev.handle({"type": "keys", "pressed": []})
    d = src.decide(ctx())
    assert not d.paused and d.action is None  # released: the policy acts
    # the last message is older than stale_after_s: hold still, whatever keys were held
    dev.handle({"type": "keys", "pressed": ["space", "w"]}, now=time.monotonic() - 0.6)
    d = src.decide(ctx())
    assert d.paused and d.action is None
    dev.handle({"type": "ping"})  # a fresh heartbeat revives it (space still held)
    assert src.decide(ctx()).action is not None
    dev.disconnect()
    d = src.decide(ctx())
    assert d.paused and d.action is None


# ----- latest-only slot -----

def test_latest_slot_keeps_only_the_newest_and_counts_drops():
    slot: LatestSlot[int] = LatestSlot()
    assert slot.take() is None and len(slot) == 0
    for i in range(5):
        slot.put(i)
        assert len(slot) == 1
    assert slot.take() == 4
    assert slot.take() is None
    assert slot.dropped == 4 and slot.put_count == 5
    slot.put(9)
    assert slot.take() == 9 and slot.dropped == 4


def test_session_offers_latest_state_only(console_policy, tmp_path):
    session = ConsoleSession(console_policy, tmp_path / "out")
    client = session.add_client(loop=None)  # a page that never reads
    for _ in range(20):
        session._republish()
    assert len(client.slot) == 1 and client.slot.dropped == 20
    assert '"type": "tick"' in client.slot.take()


# ----- bind / token -----

@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_binds_need_no_token(host):
    assert is_loopback(host)
    check_bind(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "robot.example.org"])
def test_non_loopback_binds_need_a_token(host):
    assert not is_loopback(host)
    with pytest.raises(InsecureBindError, match="token"):
        check_bind(host, None)
    with pytest.raises(InsecureBindError, match="token"):
        check_bind(host, "")
    with pytest.raises(InsecureBindError, match="at least"):
        check_bind(host, "short")
    check_bind(host, TOKEN)


def test_server_refuses_to_start_on_a_public_address_without_token(console_policy, tmp_path):
    from apo.deployment.console.server import ConsoleServer

    with pytest.raises(InsecureBindError):
        ConsoleServer(ConsoleSession(console_policy, tmp_path / "out"), host="0.0.0.0", port=0)


# ----- server (FastAPI TestClient, no robot thread) -----

@pytest.fixture
def make_client(console_policy, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from apo.deployment.console.server import create_app

    def make(token=None, base_url="http://127.0.0.1:8000"):
        session = ConsoleSession(console_policy, tmp_path / "out")
        return session, TestClient(create_app(session, token), base_url=base_url)

    return make


def receive(ws, kind: str) -> dict:
    while True:
        m = ws.receive_json()
        if m["type"] == kind:
            return m


def sync(ws) -> None:
    """Wait until the server has handled every message sent so far on ws (an invalid one is answered)."""
    ws.send_json({"type": "sync-probe"})
    receive(ws, "error")


def test_token_required_everywhere(make_client):
    from starlette.websockets import WebSocketDisconnect

    _, client = make_client(token=TOKEN, base_url="http://0.0.0.0:8000")
    assert client.get("/").status_code == 401
    assert client.get("/api/state").status_code == 401
    assert client.get("/api/state?token=wrong-token-0123456789").status_code == 401
    assert client.get(f"/?token={TOKEN}").status_code == 200
    assert client.get("/api/episodes", headers={"Authorization": f"Bearer {TOKEN}"}).json() == []
    with pytest.raises(WebSocketDisconnect):
        with client.websocket_connect("ws://0.0.0.0:8000/ws") as ws:
            ws.receive_json()
    with client.websocket_connect(f"ws://0.0.0.0:8000/ws?token={TOKEN}") as ws:
        assert ws.receive_json()["type"] == "hello"


def test_loopback_console_rejects_foreign_hosts_and_origins(make_client):
    from starlette.websockets import WebSocketDisconnect

    _, client = make_client()
    page = client.get("/")
    assert page.status_code == 200 and "apo console" in page.text
    assert client.get("/", headers={"Host": "evil.example:8000"}).status_code == 403  # DNS rebinding
    with pytest.raises(WebSocketDisconnect):
        with client.websocket_connect(WS, headers={"Origin": "http://evil.example"}) as ws:
            ws.receive_json()
    with client.websocket_connect(WS, headers={"Origin": "http://127.0.0.1:8000"}) as ws:
        assert ws.receive_json()["type"] == "hello"


def test_only_the_driver_drives_and_a_closed_driver_page_disconnects_the_device(make_client):
    session, client = make_client()  # the first page to connect drives
    with client.websocket_connect(WS) as a:
        me_a = receive(a, "hello")["client"]
        tick = receive(a, "tick")
        assert tick["driver"] == me_a and tick["status"] == "starting"
        with client.websocket_connect(WS) as b:
            me_b = receive(b, "hello")["client"]
            b.send_json({"type": "keys", "pressed": ["s"]})  # a viewer's keys are ignored
            sync(b)
            a.send_json({"type": "keys", "pressed": ["space", "w"]})
            sync(a)
            st = session.device.poll()
            assert st.connected and st.engaged
            np.testing.assert_array_equal(st.motion, [0, 1, 0])
            b.send_json({"type": "control", "action": "claim"})  # somebody drives: refused
            sync(b)
            assert session.snapshot()["driver"] == me_a
            a.close()
            deadline = time.monotonic() + 5
            while session.snapshot()["driver"] is not None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert session.snapshot()["driver"] is None
            assert not session.device.poll().connected  # the robot holds still: nobody drives
            b.send_json({"type": "control", "action": "claim"})
            sync(b)
            assert session.snapshot()["driver"] == me_b and session.device.poll().connected
            b.send_json({"type": "control", "action": "pause"})
            sync(b)
            assert session._paused
            b.send_json({"type": "control", "action": "resume"})
            sync(b)
            assert not session._paused


def test_apo_serve_refuses_a_public_bind_without_token_before_loading_anything(tmp_path, monkeypatch, capsys):
    pytest.importorskip("fastapi")
    from apo.cli.commands import ServeArgs, serve

    monkeypatch.delenv("APO_CONSOLE_TOKEN", raising=False)
    with pytest.raises(SystemExit) as e:  # the policy path does not even exist: the bind is checked first
        serve(ServeArgs(policy=tmp_path / "missing", out=tmp_path / "out", host="0.0.0.0"))
    assert e.value.code == 2 and "token" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()
