"""Limits and faults: auth by first message, failed model load, slow readers,
half-open connections, and SIGTERM draining a real server process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from clients.groundtruth import espeak, with_silence
from server import events as ev
from server.app import build_app
from server.config import ServerConfig
from tests.conftest import Received, collect_until, stream_realtime


async def test_first_message_auth(start_server_with) -> None:
    rs, stop = await start_server_with(auth_token="tok3n", auth_timeout_s=1.0)
    try:
        async with connect(rs.url) as ws:  # no header: a browser
            await ws.send(json.dumps({"type": "auth", "token": "tok3n"}))
            assert json.loads(await ws.recv())["type"] == "session.created"
        async with connect(rs.url) as ws:
            await ws.send(json.dumps({"type": "auth", "token": "wrong"}))
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008
        async with connect(rs.url) as ws:  # says nothing: closed after auth_timeout_s
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
    finally:
        await stop()


def test_required_pipeline_that_fails_to_load_makes_readyz_false(tmp_path) -> None:
    app = build_app(ServerConfig(pipelines="echo,cascade", bundles_dir=str(tmp_path)))
    assert "echo" in app.pipelines and "cascade" not in app.pipelines
    assert "cascade failed to load" in app.not_ready_reason
    auto = build_app(ServerConfig(pipelines="auto", bundles_dir=str(tmp_path)))
    assert "echo" in auto.pipelines and "failed" not in auto.not_ready_reason


async def test_slow_reader_is_closed_and_others_are_unaffected(start_server_with) -> None:
    rs, stop = await start_server_with(output_queue_messages=64, output_lead_ms=1000)
    x = with_silence(espeak("a long sentence to echo back so that there is plenty of reply audio"), 16000, 0.3, 0.8)
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills fast
        sock.connect(("127.0.0.1", rs.port))
        slow = await connect(rs.url, max_queue=1, sock=sock)
        await slow.recv()
        slow.transport.pause_reading()  # never reads again; the kernel buffers fill
        (server_side,) = rs.app.connections
        server_side.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

        async def flood() -> None:  # every ping is answered: output piles up unread
            for i in range(20000):
                await slow.send(json.dumps({"type": "ping", "event_id": f"p{i}" + "x" * 40}))

        sender = asyncio.create_task(flood())
        rec = Received()
        async with connect(rs.url) as ok:
            rec.add(await ok.recv())
            good = asyncio.create_task(stream_realtime(ok, x))
            await collect_until(ok, rec, lambda e: e["type"] == "response.done", timeout=20)
            await good
        assert rec.of("response.done")[0]["status"] == "completed"
        await asyncio.gather(sender, return_exceptions=True)  # the server closed it mid-stream
        deadline = time.monotonic() + 10
        while rs.app.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not rs.app.sessions, "the slow reader's session was not dropped"
        metrics = rs.app.metrics.render().decode()
        assert 'rejoinder_rejected_total{reason="slow_reader"} 1.0' in metrics
        slow.transport.abort()
    finally:
        await stop()


async def test_half_open_connection_is_closed_by_keepalive(start_server_with) -> None:
    rs, stop = await start_server_with(keepalive_s=0.5)
    try:
        ws = await connect(rs.url)
        await ws.recv()
        ws.transport.pause_reading()  # the peer vanished: no pong will come
        t0 = time.monotonic()
        deadline = t0 + 6
        while rs.app.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not rs.app.sessions
        print("half-open session dropped after", time.monotonic() - t0)
        ws.transport.abort()
    finally:
        await stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_sigterm_drains_a_response_in_flight() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--pipelines", "echo",
         "--drain-timeout-s", "10", "--output-lead-ms", "100"],
        stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                await asyncio.sleep(0.2)
        x = with_silence(espeak("one two three four five six"), 16000, 0.3, 0.7)
        rec = Received()
        async with connect(f"ws://127.0.0.1:{port}/v1/native") as ws:
            rec.add(await ws.recv())
            await stream_realtime(ws, x)
            await collect_until(ws, rec, lambda e: e["type"] == "response.started", timeout=5)
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    rec.add(await asyncio.wait_for(ws.recv(), 10))
        assert rec.of("response.done")[0]["status"] == "completed"  # finished, not cut
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_emit_queue_bound_is_explicit() -> None:
    cfg = ServerConfig()
    assert cfg.output_queue_messages > 0 and cfg.input_queue_messages > 0
    assert isinstance(ev.Error("x", "y"), ev.Error)


class _Boom(Exception):
    pass


async def test_a_stage_that_raises_mid_response_sends_an_error_and_the_session_recovers(start_server_with) -> None:
    import numpy as np

    from server.pipelines.base import Pipeline, PipelineSession, ReplyAudio, ReplyText

    class FlakySession(PipelineSession):
        calls = 0

        async def respond(self, turn):  # type: ignore[no-untyped-def]
            FlakySession.calls += 1
            yield ReplyText("first words")
            yield ReplyAudio(np.full(1600, 0.1, np.float32), 16000)
            if FlakySession.calls == 1:
                raise _Boom("the TTS fell over")
            yield ReplyText("second reply")

    class Flaky(Pipeline):
        name = "flaky"

        def open_session(self, worker):  # type: ignore[no-untyped-def]
            return FlakySession()

    rs, stop = await start_server_with()
    rs.app.pipelines["flaky"] = Flaky()
    try:
        rec = Received()
        async with connect(rs.url) as ws:
            rec.add(await ws.recv())
            await ws.send(json.dumps({"type": "session.update", "session": {"pipeline": "flaky"}}))
            await ws.send(json.dumps({"type": "input.text", "text": "one"}))
            await collect_until(ws, rec, lambda e: e["type"] == "response.done")
            await ws.send(json.dumps({"type": "input.text", "text": "two"}))
            await collect_until(ws, rec, lambda e: e["type"] == "response.done" and e["response_id"] == 2)
        first, second = rec.of("response.done")
        assert first["status"] == "failed" and second["status"] == "completed"
        err = [e for e in rec.of("error") if e["code"] == "pipeline_error"]
        assert len(err) == 1 and "TTS fell over" in err[0]["message"] and not err[0]["fatal"]
        assert second["text"] == "first wordssecond reply"
    finally:
        await stop()


async def test_oversized_messages(start_server_with) -> None:
    rs, stop = await start_server_with(max_message_bytes=65536)
    try:
        rec = Received()
        async with connect(rs.url, max_size=None) as ws:
            rec.add(await ws.recv())
            await ws.send(json.dumps({"type": "session.update", "session": {"limits": {"max_message_bytes": 2048}}}))
            await ws.send(b"\x00\x00" * 2048)  # 4096 bytes: over the session's own limit
            await ws.send(json.dumps({"type": "ping", "event_id": "after"}))
            await collect_until(ws, rec, lambda e: e["type"] == "pong")
            assert [e["code"] for e in rec.of("error")] == ["message_too_large"]
            assert rec.of("pong")[0]["input_samples"] == 0  # the oversized audio was not accepted
            with pytest.raises(ConnectionClosed) as info:
                await ws.send(b"\x00" * (4 * 65536))  # beyond what the websocket layer takes
                await asyncio.wait_for(ws.recv(), 5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    finally:
        await stop()
