"""The console's robot loop without a browser: a scripted page drives the BrowserDevice."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from apo.data import load_episodes
from apo.deployment.collect import INTERACTION_SEED_BASE
from apo.deployment.console.session import ConsoleConfig, ConsoleSession
from apo.deployment.runner import DeployConfig
from apo.envs import EnvConfig

from console_helpers import CONSOLE_TASK, assert_held_still, check_takeover_labels, wait_for

pytestmark = pytest.mark.slow

K = 3


class ScriptedPage:
    """Sends the held keys every 50 ms, like the page's heartbeat."""

    def __init__(self, session: ConsoleSession):
        self.session = session
        self.client = session.add_client(loop=None)
        self.keys: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.is_set():
            self.session.handle_message(self.client.id, {"type": "keys", "pressed": list(self.keys)})
            self._stop.wait(0.05)

    def press(self, *keys: str) -> None:
        self.keys = list(keys)
        self.session.handle_message(self.client.id, {"type": "keys", "pressed": list(keys)})

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.session.remove_client(self.client)


def test_console_loop_records_takeover_and_holds_still_when_the_page_is_gone(console_policy, tmp_path, recording_envs):
    out = tmp_path / "console"
    session = ConsoleSession(console_policy, out, tasks=(CONSOLE_TASK,), episodes_per_task=2,
                             deploy=DeployConfig(k_undesirable=K, max_pause_steps=12),
                             env_cfg=EnvConfig(max_steps=80), config=ConsoleConfig(control_hz=40))
    assert session.snapshot()["status"] == "starting"
    session.start()
    try:
        page = ScriptedPage(session)
        snap = session.snapshot
        wait_for(lambda: (snap()["step"] or 0) >= K + 2, what="policy steps")
        assert snap()["control"] == "policy" and 0 <= snap()["confidence"] <= 1
        page.press("space", "w")
        wait_for(lambda: snap()["episode"]["human_steps"] >= 8, what="person steps")
        page.press()
        wait_for(lambda: snap()["control"] == "policy", what="hand back")
        steps = snap()["step"]
        wait_for(lambda: snap()["step"] >= steps + 3, what="policy steps after the takeover")
        session.handle_message(page.client.id, {"type": "button", "name": "success"})
        session.handle_message(page.client.id, {"type": "button", "name": "stop"})
        wait_for(lambda: snap()["recorded"] == 1, what="episode 1 written")

        # episode 2: the page goes away mid-episode -> the robot holds still, nothing is recorded
        wait_for(lambda: snap()["episode"] and snap()["episode"]["steps"] >= 4, what="episode 2 steps")
        closed_at = len(recording_envs[0].episodes[-1])
        page.close()
        wait_for(lambda: snap()["control"] == "paused", what="paused")
        s = snap()
        assert s["pause_reason"] == "browser disconnected"
        recorded_steps = s["episode"]["steps"]
        wait_for(lambda: snap()["recorded"] == 2, what="episode 2 aborted and written")
        wait_for(lambda: snap()["status"] == "finished", what="session finished")
    finally:
        session.close()
    ep1, ep2 = load_episodes(out)
    assert (ep1.seed, ep2.seed) == (INTERACTION_SEED_BASE, INTERACTION_SEED_BASE + 1)
    a, b = check_takeover_labels(ep1.labels, K)
    assert b - a >= 8
    # W held inside the takeover: +y, gripper open (the first / last step may see SPACE without W)
    np.testing.assert_array_equal(ep1.actions[a + 1:b - 1], np.tile([0, 1, 0, -1], (b - a - 2, 1)))
    np.testing.assert_array_equal(ep1.actions[a:b, 3], -1)
    assert ep1.extras["source"] == "browser" and ep1.extras["mark"] == "success" and ep1.extras["aborted"] == "False"
    np.testing.assert_array_equal(ep2.labels, 1)
    assert len(ep2) == recorded_steps and ep2.extras["aborted"] == "True"
    assert_held_still(recording_envs[0].episodes[1], ep2.actions, closed_at, pause_steps=12)
    assert (out / "summary.json").exists() and (out / "stats.json").exists()
