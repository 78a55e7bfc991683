"""ConsoleSession: the robot loop in a background thread and the shared state the server reads.

The robot thread runs ``run_episode`` (the same runner and labels as ``apo collect``) with a
:class:`BrowserTeleopSource`: a :class:`~apo.deployment.devices.TeleopSource` around the
:class:`~apo.deployment.console.device.BrowserDevice` that also paces the loop at the control rate
and publishes every step (state + camera frame) to the connected pages. Each recorded episode is
written by the ``EpisodeWriter`` into the output folder (one atomic file each, resumable, seeds
``INTERACTION_SEED_BASE + seed + i`` as in ``collect_interactions``).

Everything shared between the robot thread and the server (clients, driver, state, episode
list) is guarded by one lock; frames go to each client through a latest-only slot, so a slow
page drops frames instead of queueing them.

Who drives: the first page to connect when nobody drives becomes the driver; the others watch.
When the driver's page closes, nobody drives and the robot holds still until a page claims the
controls (or a new one connects); a viewer is never promoted silently.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from apo.data import EpisodeWriter
from apo.data.storage import _episode_files, read_episode
from apo.deployment.collect import INTERACTION_SEED_BASE, CollectionSummary
from apo.deployment.console.buffer import LatestSlot
from apo.deployment.console.device import BrowserDevice
from apo.deployment.console.help import HelpConfig, UncertaintyPolicy, make_requester
from apo.deployment.devices import TeleopSource
from apo.deployment.labels import takeover_steps
from apo.deployment.runner import DeployConfig, EpisodeSummary, run_episode
from apo.deployment.sources import Decision, StepContext
from apo.envs import EnvConfig, make_env
from apo.envs.metaworld_env import check_rendering
from apo.evaluation.video import upscale

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsoleConfig:
    control_hz: float = 10.0
    """Control rate of the robot loop (steps per second); the page gets the frames at this rate."""
    scale: int = 4
    """Upscaling factor of the streamed camera view (nearest neighbour)."""
    jpeg_quality: int = 85
    """JPEG quality of the streamed frames."""
    stale_after_s: float = 0.5
    """A page that sent nothing for this long is stale: the robot holds still."""
    speed: float = 1.0
    """Scale of the person's xyz motion (1: full speed)."""

    def __post_init__(self) -> None:
        if not 0.1 <= self.control_hz <= 100:
            raise ValueError(f"control_hz must be in [0.1, 100], got {self.control_hz}")
        if not 1 <= self.scale <= 16:
            raise ValueError(f"scale must be in [1, 16], got {self.scale}")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"jpeg_quality must be in [1, 95], got {self.jpeg_quality}")
        if self.stale_after_s <= 0 or self.speed <= 0:
            raise ValueError("stale_after_s and speed must be > 0")


def encode_jpeg(image: np.ndarray, scale: int = 4, quality: int = 85) -> str:
    """uint8 (H, W, 3) -> base64 JPEG of the image upscaled ``scale`` times."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(upscale(np.asarray(image, np.uint8), scale)).save(buf, format="JPEG", quality=quality)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def episode_meta(path: Path, index: int) -> dict[str, Any]:
    """What the episode list shows, read from the file's attributes and labels (no images)."""
    import h5py

    with h5py.File(path, "r") as f:
        (name,) = list(f["data"].keys())
        g = f["data"][name]
        labels = g["labels"][()]
        a = g.attrs
        extras = json.loads(a.get("extras", "{}"))
        meta = dict(task=str(a["task"]), seed=int(a["seed"]), success=bool(a["success"]), source=str(a["source"]))
    return dict(
        index=index, file=path.name, steps=int(len(labels)), human_steps=int((labels == 2).sum()),
        takeovers=int(len(takeover_steps(np.where(labels == 0, 1, labels)))),
        mark=None if extras.get("mark") in (None, "None") else extras.get("mark"),
        aborted=extras.get("aborted") == "True", by=extras.get("source", meta["source"]), **meta,
    )


class Client:
    """One connected page: a latest-only slot of outgoing messages and the event that wakes its sender."""

    def __init__(self, cid: int, loop: asyncio.AbstractEventLoop | None):
        self.id = cid
        self.loop = loop
        self.slot: LatestSlot[str] = LatestSlot()
        self.event = asyncio.Event() if loop is not None else None

    def offer(self, message: str) -> None:
        self.slot.put(message)
        if self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(self.event.set)
            except RuntimeError:  # the server's loop is closed
                pass


class _Shutdown(Exception):
    pass


class BrowserTeleopSource(TeleopSource):
    """The person at the console: a TeleopSource over the BrowserDevice (disconnected or stale ->
    hold still, record nothing) that paces the loop and publishes every step to the pages."""

    name = "browser"

    def __init__(self, session: "ConsoleSession"):
        super().__init__(session.device, speed=session.config.speed, stale_after_s=session.config.stale_after_s)
        self.session = session

    def reset(self, seed: int) -> None:
        self.session.policy.reset()

    def decide(self, ctx: StepContext) -> Decision:
        self.session._await_tick()
        decision = super().decide(ctx)
        self.session._on_step(ctx, decision)
        return decision

    def close(self) -> None:
        pass  # the device belongs to the session


class ConsoleSession:
    def __init__(self, policy, out: str | Path, tasks: tuple[str, ...] = ("pick-place-v3",),
                 episodes_per_task: int = 20, deploy: DeployConfig = DeployConfig(),
                 env_cfg: EnvConfig = EnvConfig(), seed: int = 0, config: ConsoleConfig = ConsoleConfig(),
                 help: HelpConfig = HelpConfig()):
        if not tasks or episodes_per_task < 1:
            raise ValueError("give at least one task and episodes_per_task >= 1")
        check_rendering(policy.rendering_to_match(), env_cfg)
        self.base_policy = policy
        self.policy = UncertaintyPolicy(policy)
        self.out = Path(out)
        self.tasks = tuple(tasks)
        self.episodes_per_task = episodes_per_task
        self.deploy = deploy
        self.env_cfg = env_cfg
        self.seed = seed
        self.config = config
        self.help = help
        self.device = BrowserDevice()
        self._lock = threading.Lock()
        self._clients: dict[int, Client] = {}
        self._driver: int | None = None
        self._next_id = 1
        self._paused = False
        self._shutdown = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_tick: float | None = None
        self._episodes: list[dict[str, Any]] = []
        self._paths: list[Path] = []
        self._session_done: list[EpisodeSummary] = []
        self._current: dict[str, Any] | None = None
        self._status = "starting"
        self.error: str | None = None
        self._state: dict[str, Any] = {}
        self._step_state: dict[str, Any] = {}
        self._frame: str | None = None
        self._message: str | None = None
        self._publish_locked_state()

    # ----- lifecycle -----
    def start(self) -> "ConsoleSession":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="apo-console-robot", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        self._shutdown.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ----- clients (called by the server) -----
    def add_client(self, loop: asyncio.AbstractEventLoop | None = None) -> Client:
        with self._lock:
            client = Client(self._next_id, loop)
            self._next_id += 1
            self._clients[client.id] = client
            if self._driver is None:
                self._take_controls(client.id)
        self._republish()
        return client

    def remove_client(self, client: Client) -> None:
        with self._lock:
            self._clients.pop(client.id, None)
            if self._driver == client.id:
                self._driver = None
                self.device.disconnect()  # the robot holds still until someone takes the controls
        self._republish()

    def _take_controls(self, cid: int) -> None:
        self._driver = cid
        self.device.connect()

    def handle_message(self, cid: int, msg: dict[str, Any]) -> None:
        """One message from a page. Device messages count only from the driver; anyone may pause."""
        if not isinstance(msg, dict):
            raise ValueError("message must be a JSON object")
        kind = msg.get("type")
        with self._lock:
            driver = self._driver == cid
            if kind in ("keys", "button", "ping"):
                if driver:
                    self.device.handle(msg)
            elif kind == "control":
                action = msg.get("action")
                if action == "pause":
                    self._paused = True
                elif action == "resume":
                    if driver:
                        self._paused = False
                elif action == "claim":
                    if self._driver is None and cid in self._clients:
                        self._take_controls(cid)
                else:
                    raise ValueError(f"unknown control action {action!r}")
            else:
                raise ValueError(f"unknown message type {kind!r}")
        if kind == "control":
            self._republish()

    def pause(self) -> None:
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        with self._lock:
            self._paused = False

    # ----- what the server reads -----
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._state, driver=self._driver, viewers=len(self._clients))

    def episodes(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._episodes]

    def episode_path(self, index: int) -> Path:
        with self._lock:
            if not 0 <= index < len(self._paths):
                raise IndexError(index)
            return self._paths[index]

    def replay(self, index: int) -> dict[str, Any]:
        """A recorded episode for the replay view: upscaled JPEG frames, labels and its metadata."""
        path = self.episode_path(index)
        ep = read_episode(path)
        c = self.config
        return dict(self.episodes()[index], frames=[encode_jpeg(im, c.scale, c.jpeg_quality) for im in ep.images],
                    labels=ep.labels.astype(int).tolist(), control_hz=c.control_hz)

    def client_stats(self) -> dict[int, dict[str, int]]:
        with self._lock:
            return {cid: {"put": c.slot.put_count, "dropped": c.slot.dropped} for cid, c in self._clients.items()}

    # ----- the robot thread -----
    def _run(self) -> None:
        try:
            if self.help.enabled:
                self._set_status("calibrating")
                self.policy = UncertaintyPolicy(self.base_policy,
                                                make_requester(self.base_policy, self.help, self.tasks, self.env_cfg))
            writer = EpisodeWriter(self.out)
            self._load_recorded()
            with self._lock:
                seen = {(e["task"], e["seed"]) for e in self._episodes}
            source = BrowserTeleopSource(self)
            for task in self.tasks:
                env = make_env(task, self.env_cfg)
                try:
                    for i in range(self.episodes_per_task):
                        s = INTERACTION_SEED_BASE + self.seed + i
                        if (task, s) in seen:
                            continue
                        self._wait_for_driver()
                        self._begin_episode(task, s)
                        episode, summary = run_episode(env, self.policy, source, s, self.deploy)
                        path = writer.write(episode) if episode is not None else None
                        self._end_episode(summary, path)
                finally:
                    env.close()
            self._set_status("finished")
        except _Shutdown:
            self._set_status("stopped")
        except Exception as e:  # shown on the page; the server keeps serving the recorded episodes
            self.error = f"{type(e).__name__}: {e}"
            log.error("console robot loop failed:\n%s", traceback.format_exc())
            self._set_status("error")
        finally:
            self._save_summary()

    def _load_recorded(self) -> None:
        with self._lock:
            self._episodes, self._paths = [], []
        for i, (_, p) in enumerate(_episode_files(self.out)):
            meta = episode_meta(p, i)
            with self._lock:
                self._episodes.append(meta)
                self._paths.append(p)

    def _save_summary(self, stats: bool = True) -> None:
        """summary.json (and stats.json) over every episode in the folder, as ``apo collect`` writes them."""
        with self._lock:
            metas = [dict(e) for e in self._episodes]
        if not metas:
            return
        try:
            items = [EpisodeSummary(m["task"], m["seed"], m["steps"], m["human_steps"], m["takeovers"], m["success"])
                     for m in metas]
            (self.out / "summary.json").write_text(json.dumps(
                {"summary": CollectionSummary.from_summaries(items).as_dict(), "deploy": asdict(self.deploy),
                 "source": "browser"}, indent=2))
            if stats:
                from apo.data import DatasetStats, load_episodes

                DatasetStats.compute(load_episodes(self.out)).save(self.out)
        except Exception:
            log.error("could not write the summary of %s:\n%s", self.out, traceback.format_exc())

    def _wait_for_driver(self) -> None:
        period = 1.0 / self.config.control_hz
        first = True
        while True:
            with self._lock:
                ready = self._driver is not None and not self._paused
            if ready:
                return
            if first:
                self._set_status("waiting")
                first = False
            else:
                self._republish()
            if self._shutdown.wait(period):
                raise _Shutdown

    def _begin_episode(self, task: str, seed: int) -> None:
        with self._lock:
            self._current = dict(task=task, seed=seed, steps=0, human_steps=0, takeovers=0, last="none",
                                 number=len(self._episodes))
            self._status = "running"
        self._next_tick = None

    def _end_episode(self, summary: EpisodeSummary, path: Path | None) -> None:
        meta = episode_meta(path, 0) if path is not None else None
        with self._lock:
            self._session_done.append(summary)
            if meta is not None:
                meta["index"] = len(self._episodes)
                self._episodes.append(meta)
                self._paths.append(path)
            self._current = None
        self._save_summary(stats=False)

    def _await_tick(self) -> None:
        """Wait for the next control tick (never catching up on missed ticks); hold while paused."""
        period = 1.0 / self.config.control_hz
        now = time.monotonic()
        if self._next_tick is None or now - self._next_tick > period:
            self._next_tick = now
        elif self._next_tick > now and self._shutdown.wait(self._next_tick - now):
            raise _Shutdown
        self._next_tick += period
        paused = False
        while True:
            with self._lock:
                paused_now = self._paused
            if not paused_now:
                break
            if not paused:
                self._set_status("paused")
                paused = True
            else:
                self._republish()
            if self._shutdown.wait(period):
                raise _Shutdown
        if paused:
            self._set_status("running")
            self._next_tick = time.monotonic() + period
        if self._shutdown.is_set():
            raise _Shutdown

    def _on_step(self, ctx: StepContext, d: Decision) -> None:
        control = "paused" if d.paused else "person" if d.action is not None else "policy"
        frame = encode_jpeg(ctx.obs["image"], self.config.scale, self.config.jpeg_quality)
        with self._lock:
            ep = self._current
            if ep is not None and not d.paused:
                ep["steps"] = ctx.t + 1
                ep["human_steps"] += control == "person"
                ep["takeovers"] += control == "person" and ep["last"] == "policy"
                ep["last"] = control
            if d.paused:
                reason = "browser disconnected" if not self.device.connected else "browser not responding"
            else:
                reason = None
            self._frame = frame
            self._step_state = dict(
                step=ctx.t, control=control, pause_reason=reason, success=bool(ctx.success),
                entropy=self.policy.last_entropy, confidence=self.policy.confidence, help=self.policy.requesting,
                mark=d.mark, hand=[round(float(x), 4) for x in np.asarray(ctx.obs["proprio"])[:4]],
            )
            self._publish_locked_state()
            message, clients = self._message, list(self._clients.values())
        for c in clients:
            c.offer(message)

    # ----- publishing -----
    def _set_status(self, status: str) -> None:
        with self._lock:
            self._status = status
            if status in ("waiting", "finished", "stopped", "error"):
                self._step_state = {}
        self._republish()

    def _republish(self) -> None:
        with self._lock:
            self._publish_locked_state()
            message, clients = self._message, list(self._clients.values())
        for c in clients:
            c.offer(message)

    def _publish_locked_state(self) -> None:
        """Rebuild the state and its message (call with the lock held)."""
        done = self._session_done
        cur = self._current or {}
        steps = sum(s.steps for s in done) + cur.get("steps", 0)
        human = sum(s.human_steps for s in done) + cur.get("human_steps", 0)
        step_state = self._step_state
        self._state = dict(
            status=self._status, error=self.error, control_hz=self.config.control_hz,
            help_enabled=self.help.enabled,
            help_threshold=getattr(getattr(self.policy, "requester", None), "threshold", None),
            episode=None if not cur else dict(task=cur["task"], seed=cur["seed"], number=cur["number"],
                                              steps=cur["steps"], human_steps=cur["human_steps"],
                                              takeovers=cur["takeovers"]),
            step=step_state.get("step"), control=step_state.get("control", "none"),
            pause_reason=step_state.get("pause_reason"), confidence=step_state.get("confidence"),
            entropy=step_state.get("entropy"), help=bool(step_state.get("help", False)),
            success=step_state.get("success", False), mark=step_state.get("mark"), hand=step_state.get("hand"),
            session=dict(episodes=len(done), steps=steps, human_steps=human,
                         intervention_rate=human / steps if steps else 0.0,
                         takeovers=sum(s.takeovers for s in done) + cur.get("takeovers", 0),
                         successes=sum(s.success for s in done)),
            recorded=len(self._episodes), episodes_total=len(self.tasks) * self.episodes_per_task,
        )
        self._message = json.dumps(dict(self._state, type="tick", driver=self._driver,
                                        frame=self._frame if step_state else None))
