"""``rejoinder talk`` end to end against an in-process echo server."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from clients import talk
from tests.clients.conftest import needs_espeak, say


@needs_espeak
async def test_talk_prints_transcript_and_latency_and_writes_the_reply(
    echo_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    question, reply = tmp_path / "question.wav", tmp_path / "out" / "reply.wav"
    sf.write(question, say("what time is it", 22050), 22050, subtype="PCM_16")  # sent at 22050, as is
    argv = [str(question), "--out", str(reply), "--url", echo_server.url, "--pipeline", "echo"]
    rc = await asyncio.to_thread(talk.main, argv)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "user:" in out and "assistant:" in out
    latency = next(line for line in out.splitlines() if line.startswith("turn latency:"))
    assert int(latency.split()[2]) > 0 and "pipeline echo" in latency
    assert "first_send_ms" in out
    audio, rate = sf.read(reply)
    assert rate == 24000 and len(audio) / rate > 0.5


def test_talk_says_when_the_server_is_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    question = tmp_path / "q.wav"
    sf.write(question, [0.0] * 1600, 16000)
    rc = talk.main([str(question), "--out", str(tmp_path / "r.wav"), "--url", f"ws://127.0.0.1:{port}/v1/native"])
    assert rc == 1 and "cannot connect" in capsys.readouterr().err
