"""The web console: a FastAPI app (one static page, a websocket, a few JSON routes) and its server.

Routes: ``GET /`` the page; ``WS /ws`` the live channel (server -> page: a ``tick`` message per
control step with the state and the camera frame as base64 JPEG, latest-only per page; page ->
server: held keys / buttons / pause, resume, claim); ``GET /api/state``, ``GET /api/episodes``,
``GET /api/episodes/{i}`` (an episode's frames and labels for the replay).

Security: bound to 127.0.0.1 by default. Any other address needs a token (refused without one):
every route and the websocket then require ``?token=...`` (or ``Authorization: Bearer ...``), and
the page passes on the token it was opened with. Without a token, requests must name a loopback
host (no DNS rebinding), and a websocket must come from the console's own origin (a foreign page
in the same browser cannot drive the robot).
"""


import asyncio
import hmac
import ipaddress
import json
import socket
import threading
import time
from importlib import resources
from urllib.parse import urlsplit

from apo.deployment.console.session import ConsoleSession

MIN_TOKEN_LENGTH = 16


class InsecureBindError(ValueError):
    """Serving on a non-loopback address without a token (or with a weak one) is refused."""


def is_loopback(host: str) -> bool:
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback bind without a token, and any token shorter than MIN_TOKEN_LENGTH."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise InsecureBindError(
            f"the token must have at least {MIN_TOKEN_LENGTH} characters; make one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe())'`"
        )
    if not is_loopback(host) and not token:
        raise InsecureBindError(
            f"refusing to serve the console on {host!r} without a token: anyone who can reach it could drive the "
            "robot. Pass --token (or set APO_CONSOLE_TOKEN), or bind to 127.0.0.1 and use an SSH tunnel."
        )


def _host_name(host_header: str) -> str:
    return urlsplit(f"//{host_header}").hostname or ""


def page_html() -> str:
    return resources.files("apo.deployment.console").joinpath("static/index.html").read_text(encoding="utf-8")


def create_app(session: ConsoleSession, token: str | None = None):
    from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
    from fastapi.responses import HTMLResponse, JSONResponse

    html = page_html()
    app = FastAPI(title="apo console", docs_url=None, redoc_url=None, openapi_url=None)

    def allowed(headers, query) -> tuple[bool, str]:
        if token:
            given = query.get("token") or ""
            auth = headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = given or auth[7:].strip()
            if not hmac.compare_digest(given.encode(), token.encode()):
                return False, "missing or wrong token"
        elif not is_loopback(_host_name(headers.get("host", ""))):
            return False, "this console answers only to a loopback host name (127.0.0.1, localhost, [::1])"
        return True, ""

    @app.middleware("http")
    async def guard(request: Request, call_next):
        ok, why = allowed(request.headers, request.query_params)
        if not ok:
            return JSONResponse({"detail": why}, status_code=401 if token else 403)
        response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        return response

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return html

    @app.get("/api/state")
    def state() -> dict:
        return session.snapshot()

    @app.get("/api/episodes")
    def episodes() -> list[dict]:
        return session.episodes()

    @app.get("/api/episodes/{index}")
    def episode(index: int) -> dict:
        try:
            return session.replay(index)
        except IndexError:
            raise HTTPException(404, f"no episode {index}") from None

    @app.websocket("/ws")
    async def live(ws: WebSocket) -> None:
        ok, why = allowed(ws.headers, ws.query_params)
        origin = ws.headers.get("origin")
        if ok and origin is not None and urlsplit(origin).netloc != ws.headers.get("host", ""):
            ok, why = False, "cross-origin websocket refused"
        if not ok:
            await ws.close(code=1008, reason=why)
            return
        await ws.accept()
        client = session.add_client(asyncio.get_running_loop())
        await ws.send_text(json.dumps({"type": "hello", "client": client.id}))

        async def send_latest() -> None:
            try:
                while True:
                    await client.event.wait()
                    client.event.clear()
                    message = client.slot.take()
                    if message is not None:
                        await ws.send_text(message)
            except Exception:  # the page went away: the receive loop below sees it too
                return

        sender = asyncio.create_task(send_latest())
        try:
            while True:
                raw = await ws.receive()
                if raw["type"] == "websocket.disconnect":
                    break
                try:
                    session.handle_message(client.id, json.loads(raw.get("text") or ""))
                except ValueError as e:  # malformed or unknown message: say so, keep the connection
                    await ws.send_text(json.dumps({"type": "error", "detail": str(e)}))
        except WebSocketDisconnect:
            pass
        finally:
            session.remove_client(client)
            sender.cancel()

    return app


class ConsoleServer:
    """Serves a ConsoleSession. ``run()`` blocks (the CLI); ``start()`` / ``stop()`` run it in a
    thread (tests). ``port=0`` picks a free port; ``url`` tells which."""

    def __init__(self, session: ConsoleSession, host: str = "127.0.0.1", port: int = 8000,
                 token: str | None = None, log_level: str = "warning"):
        import uvicorn

        check_bind(host, token)
        self.session = session
        self.host, self.token = host, token
        family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host.strip("[]"), port))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(create_app(session, token), log_level=log_level, lifespan="off",
                                ws_max_size=65536, timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        h = self.host.strip("[]")
        h = f"[{h}]" if ":" in h else h
        return f"http://{h}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def run(self) -> None:
        self.session.start()
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.session.close()
            self.sock.close()

    def start(self, timeout: float = 20.0) -> "ConsoleServer":
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                        name="apo-console-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the console server did not start")
            time.sleep(0.02)
        self.session.start()
        return self

    def stop(self) -> None:
        self.session.close()
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self.sock.close()
