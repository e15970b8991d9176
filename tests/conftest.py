"""Shared fixtures: an in-process server on a free loopback port."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from server.app import build_app, warm_up
from server.config import ServerConfig
from server.protocol.native import unpack_audio
from server.protocol.schema import first_error
from server.transport import App, shutdown, start_server
from streaming.audio import float32_to_pcm16


@dataclass
class RunningServer:
    app: App
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/native"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def _start(**overrides: Any) -> tuple[RunningServer, Any]:
    cfg = ServerConfig(port=0, **{"pipelines": "echo", **overrides})
    app = build_app(cfg)
    server = await start_server(app)
    await warm_up(app)
    port = list(server.sockets)[0].getsockname()[1]
    return RunningServer(app, port), server


@pytest.fixture
async def echo_server() -> AsyncIterator[RunningServer]:
    rs, server = await _start()
    yield rs
    await shutdown(rs.app, server)
    rs.app.worker.stop()


@pytest.fixture
def start_server_with() -> Callable[..., Any]:
    """Factory: ``rs, stop = await start_server_with(max_sessions=1)``."""

    async def factory(**overrides: Any) -> tuple[RunningServer, Callable[[], Any]]:
        rs, server = await _start(**overrides)

        async def stop() -> None:
            await shutdown(rs.app, server)
            rs.app.worker.stop()

        return rs, stop

    return factory


@dataclass
class Received:
    """Everything a test client got back, with schema validation of each event."""

    events: list[dict[str, Any]] = field(default_factory=list)
    audio: dict[int, list[np.ndarray]] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def of(self, etype: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == etype]

    def add(self, message: str | bytes) -> dict[str, Any] | None:
        self.times.append(time.monotonic())
        if isinstance(message, bytes):
            rid, offset, pcm = unpack_audio(message)
            chunks = self.audio.setdefault(rid, [])
            have = sum(len(c) for c in chunks)
            assert offset == have, f"audio offset {offset} != samples received {have}"
            chunks.append(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768)
            return None
        event = json.loads(message)
        problem = first_error("server", event)
        assert problem is None, f"server event violates schema: {problem}: {event}"
        self.events.append(event)
        return event


async def stream_realtime(ws: Any, audio: np.ndarray, rate: int = 16000, frame_ms: int = 20) -> float:
    """Send float32 audio as PCM16 frames at real-time pace; returns t0 (monotonic)."""
    n = rate * frame_ms // 1000
    t0 = time.monotonic()
    for i, start in enumerate(range(0, len(audio), n)):
        await asyncio.sleep(max(0.0, t0 + (i + 1) * frame_ms / 1000 - time.monotonic()))
        await ws.send(float32_to_pcm16(audio[start : start + n]))
    return t0


async def collect_until(ws: Any, rec: Received, done: Callable[[dict[str, Any]], bool], timeout: float = 8.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):  # noqa: ASYNC109
        while True:
            ev = rec.add(await ws.recv())
            if ev is not None and done(ev):
                return
