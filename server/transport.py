"""The websockets adapter: HTTP endpoints, static files and websocket sessions.

This is the only module that knows websockets and HTTP. It accepts a
connection, translates messages with a protocol (``server.protocol``), feeds
a :class:`~server.session.Session` and writes what it emits. Outbound
messages go through a bounded queue: a client that does not read is closed
as a slow reader instead of being buffered without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import mimetypes
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from server import events as ev
from server.config import ServerConfig
from server.events import ErrorCode
from server.logs import log
from server.metrics import Metrics
from server.pipelines.base import Pipeline
from server.protocol.native import NativeProtocol
from server.protocol.realtime import RealtimeProtocol
from server.session import Session
from server.worker import InferenceWorker

NATIVE_PATH = "/v1/native"

# websocket close codes (docs/protocol.md)
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_OVERLOADED = 1013


class WireProtocol(Protocol):
    """A per-connection translator (it may keep state, e.g. item ids).

    ``parse`` turns one message into zero or more inbound events; ``serialize``
    turns one outbound event into zero or more messages.
    """

    name: str

    def parse_many(self, message: str | bytes) -> list[ev.InEvent | ev.Error]: ...
    def serialize_many(self, event: ev.OutEvent) -> list[str | bytes]: ...


ProtocolFactory = Callable[[dict[str, str]], WireProtocol]


@dataclass
class App:
    """Everything one server process shares: config, models, worker, metrics."""

    cfg: ServerConfig
    pipelines: dict[str, Pipeline]
    worker: InferenceWorker
    metrics: Metrics = field(default_factory=Metrics)
    ready: bool = False
    not_ready_reason: str = "starting"
    sessions: dict[str, Session] = field(default_factory=dict)
    connections: set[ServerConnection] = field(default_factory=set)
    protocols: dict[str, ProtocolFactory] = field(
        default_factory=lambda: {
            NATIVE_PATH: lambda query: NativeProtocol(),
            "/v1/realtime": lambda query: RealtimeProtocol(query),
        }
    )
    draining: bool = False
    skipped: dict[str, str] = field(default_factory=dict)  # pipelines that did not load, and why
    load_problems: list[str] = field(default_factory=list)  # what keeps /readyz false
    background: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def default_pipeline(self) -> str:
        if self.cfg.default_pipeline and self.cfg.default_pipeline in self.pipelines:
            return self.cfg.default_pipeline
        for name in self.cfg.pipeline_list():
            if name in self.pipelines:
                return name
        return next(iter(self.pipelines))


def _text(status: HTTPStatus, body: str, ctype: str = "text/plain; charset=utf-8") -> Response:
    data = body.encode()
    headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(data))), ("Cache-Control", "no-store")])
    return Response(status.value, status.phrase, headers, data)


def _token_ok(cfg: ServerConfig, token: str) -> bool:
    return hmac.compare_digest(token.encode(), cfg.auth_token.encode())


def _authorized(cfg: ServerConfig, headers: Headers) -> bool | None:
    """True/False for a header that is right/wrong; None when there is none (first-message auth)."""
    if not cfg.auth_token:
        return True
    got = headers.get("Authorization")
    if got is None:
        return None
    scheme, _, token = got.partition(" ")
    return scheme.lower() == "bearer" and _token_ok(cfg, token.strip())


async def _first_message_auth(cfg: ServerConfig, conn: ServerConnection) -> bool:
    """Browsers cannot set headers: accept ``{"type": "auth", "token": ...}`` as the first message."""
    try:
        msg = await asyncio.wait_for(conn.recv(), cfg.auth_timeout_s)
        data = json.loads(msg) if isinstance(msg, str) else None
    except (TimeoutError, ValueError, ConnectionClosed):
        return False
    return (
        isinstance(data, dict)
        and data.get("type") == "auth"
        and isinstance(data.get("token"), str)
        and _token_ok(cfg, data["token"])
    )


def _static(root: Path, path: str) -> Response | None:
    rel = path.split("?", 1)[0].lstrip("/") or "index.html"
    target = (root / rel).resolve()
    if root.resolve() not in target.parents or not target.is_file():
        return None
    ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if target.suffix == ".js":
        ctype = "text/javascript"
    data = target.read_bytes()
    headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(data))), ("Cache-Control", "no-cache")])
    return Response(200, "OK", headers, data)


def make_process_request(app: App) -> Callable[[ServerConnection, Request], Response | None]:
    cfg = app.cfg
    origins = cfg.origin_list()

    def process_request(conn: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        is_ws = "websocket" in request.headers.get("Upgrade", "").lower()
        if path == "/healthz":
            return _text(HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            if app.ready:
                return _text(HTTPStatus.OK, "ready\n")
            return _text(HTTPStatus.SERVICE_UNAVAILABLE, f"not ready: {app.not_ready_reason}\n")
        if path == "/metrics":
            app.metrics.worker_queue.set(app.worker.depth)
            app.metrics.vad_batch.set(app.worker.max_batch)
            return _text(HTTPStatus.OK, app.metrics.render().decode(), "text/plain; version=0.0.4")
        if path in app.protocols and is_ws:
            if origins and request.headers.get("Origin") not in origins:
                app.metrics.rejected.labels("origin").inc()
                return _text(HTTPStatus.FORBIDDEN, "origin not allowed\n")
            auth = _authorized(cfg, request.headers)
            if auth is False or (auth is None and path != NATIVE_PATH):
                app.metrics.rejected.labels("auth").inc()
                return _text(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token\n")
            if app.draining or not app.ready:
                app.metrics.rejected.labels("not_ready").inc()
                return _text(HTTPStatus.SERVICE_UNAVAILABLE, "server not ready or shutting down\n")
            if len(app.connections) >= cfg.max_sessions:
                app.metrics.rejected.labels("full").inc()
                return _text(HTTPStatus.SERVICE_UNAVAILABLE, "server full: too many sessions\n")
            return None
        if request.headers.get("Upgrade") is None:
            resp = _static(Path(cfg.web_root), path)
            if resp is not None:
                return resp
        return _text(HTTPStatus.NOT_FOUND, "not found\n")

    return process_request


async def handle_connection(app: App, conn: ServerConnection) -> None:
    """Run one websocket session until the client leaves or a limit closes it."""
    cfg = app.cfg
    if conn.request is not None and _authorized(cfg, conn.request.headers) is None:  # native path only
        if not await _first_message_auth(cfg, conn):
            app.metrics.rejected.labels("auth").inc()
            await conn.close(CLOSE_POLICY, "unauthorized: send Authorization: Bearer or an auth message first")
            return
    path = conn.request.path.split("?", 1)[0] if conn.request else NATIVE_PATH
    query = dict(parse_qsl(conn.request.path.split("?", 1)[1])) if conn.request and "?" in conn.request.path else {}
    proto = app.protocols[path](query)
    sid = uuid.uuid4().hex[:16]
    out: asyncio.Queue[str | bytes | None] = asyncio.Queue(maxsize=cfg.output_queue_messages)
    closing: list[tuple[int, str]] = []

    def emit(event: ev.OutEvent) -> None:
        if closing:
            return
        try:
            for message in proto.serialize_many(event):
                out.put_nowait(message)
        except asyncio.QueueFull:
            closing.append((CLOSE_POLICY, "slow reader: output buffer full"))
            app.metrics.rejected.labels("slow_reader").inc()
            with contextlib.suppress(asyncio.QueueFull):
                out.put_nowait(None)

    async def writer() -> None:
        while True:
            msg = await out.get()
            if msg is None:
                break
            await conn.send(msg)

    session = Session(
        session_id=sid,
        cfg=cfg,
        pipelines=app.pipelines,
        default_pipeline=app.default_pipeline,
        worker=app.worker,
        emit=emit,
        metrics=app.metrics,
    )
    app.sessions[sid] = session
    app.connections.add(conn)
    app.metrics.sessions.inc()
    app.metrics.sessions_total.inc()
    log(logging.INFO, "session open", session=sid, path=path, protocol=proto.name)
    wtask = asyncio.create_task(writer())
    started = time.monotonic()
    close_code, reason = CLOSE_NORMAL, "bye"
    try:
        await session.start()
        while not closing:
            left = session.settings.limits["max_session_s"] - (time.monotonic() - started)
            idle = session.settings.limits["idle_timeout_s"]
            try:
                msg = await asyncio.wait_for(conn.recv(), timeout=max(0.0, min(idle, left)))
            except TimeoutError:
                if time.monotonic() - started >= session.settings.limits["max_session_s"]:
                    code, why = ErrorCode.SESSION_TOO_LONG, "maximum session length reached"
                else:
                    code, why = ErrorCode.IDLE_TIMEOUT, f"no message for {idle:g} s"
                emit(ev.Error(code, why, fatal=True))
                close_code, reason = CLOSE_POLICY, why
                break
            if len(msg) > session.settings.limits["max_message_bytes"]:
                emit(ev.Error(ErrorCode.MESSAGE_TOO_LARGE, f"message of {len(msg)} bytes exceeds the session limit"))
                continue
            for event in proto.parse_many(msg):
                await session.handle(event)
    except ConnectionClosed:
        close_code, reason = CLOSE_NORMAL, "client closed"
    finally:
        if app.draining:
            await session.drain(cfg.drain_timeout_s)
            close_code, reason = CLOSE_GOING_AWAY, "server shutting down"
        await session.close()
        if closing:
            close_code, reason = closing[0]
        app.sessions.pop(sid, None)
        app.connections.discard(conn)
        app.metrics.sessions.dec()
        if closing:  # a slow reader: do not wait on a peer that does not read
            wtask.cancel()
            conn.transport.abort()
        else:
            with contextlib.suppress(asyncio.QueueFull):
                out.put_nowait(None)
            try:
                await asyncio.wait_for(wtask, timeout=2.0)
            except (TimeoutError, ConnectionClosed):
                wtask.cancel()
            await conn.close(close_code, reason)
        log(logging.INFO, "session closed", session=sid, code=close_code, reason=reason,
            samples_in=session.samples_in)


async def _watch_loop_lag(app: App, interval: float = 0.5) -> None:
    while True:
        t = time.monotonic()
        await asyncio.sleep(interval)
        app.metrics.loop_lag.set(max(0.0, time.monotonic() - t - interval))


async def start_server(app: App, *, install_signals: bool = False) -> Server:
    """Start listening; returns the websockets Server (``server.close()`` to stop)."""
    cfg = app.cfg
    max_size = max(cfg.max_message_bytes, 1 << 16)

    async def handler(conn: ServerConnection) -> None:
        await handle_connection(app, conn)

    server = await serve(
        handler,
        cfg.host,
        cfg.port,
        process_request=make_process_request(app),
        max_size=max_size * 2,
        max_queue=cfg.input_queue_messages,
        ping_interval=cfg.keepalive_s,
        ping_timeout=cfg.keepalive_s,
        close_timeout=2.0,
        compression=None,
    )
    app.background.add(asyncio.create_task(_watch_loop_lag(app)))
    if install_signals:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(shutdown(app, server)))
        loop.add_signal_handler(signal.SIGINT, lambda: asyncio.ensure_future(shutdown(app, server)))
    return server


async def shutdown(app: App, server: Server) -> None:
    """Stop accepting, let responses in flight finish, then close every session."""
    if app.draining:
        return
    app.draining = True
    app.ready = False
    app.not_ready_reason = "shutting down"
    log(logging.INFO, "draining", sessions=len(app.sessions))
    server.close(close_connections=False)
    await asyncio.gather(*(s.drain(app.cfg.drain_timeout_s) for s in list(app.sessions.values())))
    for conn in list(app.connections):
        await conn.close(CLOSE_GOING_AWAY, "server shutting down")
    await server.wait_closed()
    for t in app.background:
        t.cancel()
