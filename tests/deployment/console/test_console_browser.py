"""End to end in a real headless Chromium: the console page streams frames, the keyboard takes over
(labels 2, the K policy steps before 0, 1 elsewhere), the episode list replays, and a closed page
makes the robot hold still (nothing recorded while disconnected)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from apo.data import load_episodes
from apo.deployment.console.session import ConsoleConfig, ConsoleSession
from apo.deployment.runner import DeployConfig
from apo.envs import EnvConfig

from console_helpers import CONSOLE_TASK, assert_held_still, check_takeover_labels, wait_for

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
K = 3
PAUSE_STEPS = 15


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"needs Debian's chromium at {CHROMIUM} (.ci/run installs it: apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "needs Playwright for Python (pip install -e '.[dev]'); the browser is the system chromium"
    for module in ("fastapi", "uvicorn", "websockets"):
        if importlib.util.find_spec(module) is None:
            return f"needs {module} (pip install -e '.[console]')"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = _missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def dom_number(page, element_id: str) -> float:
    text = page.text_content(f"#{element_id}") or ""
    try:
        return float(text)
    except ValueError:
        return -1.0


def test_browser_takeover_labels_replay_and_disconnect_hold(browser, console_policy, tmp_path, recording_envs):
    from apo.deployment.console.server import ConsoleServer

    out = tmp_path / "console"
    session = ConsoleSession(console_policy, out, tasks=(CONSOLE_TASK,), episodes_per_task=2,
                             deploy=DeployConfig(k_undesirable=K, max_pause_steps=PAUSE_STEPS),
                             env_cfg=EnvConfig(max_steps=150), config=ConsoleConfig(control_hz=10))
    server = ConsoleServer(session, host="127.0.0.1", port=0).start()
    snap = session.snapshot
    try:
        assert server.port != 0 and server.url.startswith("http://127.0.0.1:")
        page = browser.new_page()
        page.goto(server.url)
        # the page is the driver: the episode starts and frames stream in
        page.wait_for_function("Number(document.getElementById('frames').textContent) >= 5", timeout=20_000)
        assert page.get_attribute("#view", "src").startswith("data:image/jpeg;base64,")
        assert page.text_content("#role") == "driving"
        wait_for(lambda: dom_number(page, "step") >= K + 2, what="policy steps shown on the page")
        assert (page.text_content("#control") or "").startswith("policy")

        # hold SPACE (+ W) for some steps, then hand back
        page.keyboard.down("Space")
        page.keyboard.down("w")
        page.wait_for_function("document.getElementById('control').textContent.startsWith('person')", timeout=10_000)
        page.wait_for_function("Number(document.getElementById('human').textContent) >= 8", timeout=15_000)
        page.keyboard.up("w")
        page.keyboard.up("Space")
        page.wait_for_function("document.getElementById('control').textContent.startsWith('policy')", timeout=10_000)
        after = dom_number(page, "step")
        wait_for(lambda: dom_number(page, "step") >= after + 3, what="policy steps after the takeover")
        page.keyboard.press("Enter")  # mark success
        page.keyboard.press("Escape")  # stop the episode

        # the episode list shows it and replays its frames
        page.wait_for_selector("button.replay", timeout=10_000)
        assert "%" in (page.text_content("#rate") or "")
        page.click("button.replay")
        page.wait_for_function("Number(document.getElementById('replay-frames').textContent) > 0", timeout=10_000)
        assert page.get_attribute("#replay-img", "src").startswith("data:image/jpeg;base64,")

        # episode 2 runs; closing the page makes the robot hold still and record nothing
        wait_for(lambda: (snap()["episode"] or {}).get("number") == 1 and snap()["episode"]["steps"] >= 4,
                 what="episode 2 steps")
        closed_at = len(recording_envs[0].episodes[-1])
        page.close()
        wait_for(lambda: snap()["control"] == "paused", what="the robot holding still")
        s = snap()
        assert s["pause_reason"] == "browser disconnected" and s["driver"] is None
        wait_for(lambda: snap()["recorded"] == 2, timeout=30, what="episode 2 aborted and written")
        wait_for(lambda: snap()["status"] == "finished", what="session finished")
    finally:
        server.stop()

    ep1, ep2 = load_episodes(out)
    a, b = check_takeover_labels(ep1.labels, K)
    assert b - a >= 8
    # W held inside the takeover: +y, gripper open (the first / last step may see SPACE without W)
    np.testing.assert_array_equal(ep1.actions[a + 1:b - 1], np.tile([0, 1, 0, -1], (b - a - 2, 1)))
    np.testing.assert_array_equal(ep1.actions[a:b, 3], -1)
    assert ep1.extras["source"] == "browser" and ep1.extras["mark"] == "success"
    np.testing.assert_array_equal(ep2.labels, 1)
    assert ep2.extras["aborted"] == "True"
    assert_held_still(recording_envs[0].episodes[1], ep2.actions, closed_at, PAUSE_STEPS)
