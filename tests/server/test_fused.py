"""The fused pipeline end to end over a real websocket.

The reply audio (audio-head codec tokens -> codec decoder) is transcribed by
pocketsphinx in general English and must contain the expected key word.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import connect

from clients.groundtruth import espeak, speech_bounds, with_silence
from models.domain import key_word_hit
from tests.conftest import Received, collect_until, stream_realtime
from tests.server.test_cascade import general_english

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    not (ROOT / "bundles/fused/manifest.json").is_file() or not (ROOT / "bundles/codec/decoder.onnx").is_file(),
    reason="fused bundle or built codec decoder missing",
)


@pytest.mark.parametrize(("question", "key_word"), [("count from three to eight", "eight")])
async def test_fused_answers_a_spoken_question(start_server_with, question: str, key_word: str) -> None:
    rs, stop = await start_server_with(pipelines="fused")
    try:
        a = espeak(question)
        _, end = speech_bounds(a, 16000)
        x = with_silence(a, 16000, 0.4, 2.0)
        rec = Received()
        async with connect(rs.url) as ws:
            rec.add(await ws.recv())
            assert rec.events[0]["session"]["turn_detection"]["mode"] == "semantic"
            sender = asyncio.create_task(stream_realtime(ws, x))
            await collect_until(ws, rec, lambda e: e["type"] == "response.done", timeout=15)
            sender.cancel()
            # the next turn starts from a fresh context: text input works right after
            await ws.send(json.dumps({"type": "input.text", "text": "thank you"}))
            await collect_until(ws, rec, lambda e: e["type"] == "response.done" and e["response_id"] == 2, timeout=15)
    finally:
        await stop()
    first, second = rec.of("response.done")
    assert first["status"] == "completed" and second["status"] == "completed"
    stopped = rec.of("speech.stopped")[0]
    assert stopped["reason"] in ("semantic", "silence")
    assert stopped["audio_ms"] >= (end / 16000 + 0.4) * 1000 - 60  # no takeover
    said = "".join(e["delta"] for e in rec.of("transcript.delta") if e["role"] == "assistant" and e["response_id"] == 1)
    assert said == first["text"] and said
    audio = np.concatenate(rec.audio[first["response_id"]])
    assert np.sqrt(np.mean(audio**2)) > 0.01
    assert key_word_hit(general_english(audio), key_word), (said, general_english(audio))
    assert "welcome" in second["text"].lower()
