"""The cascade baseline end to end over a real websocket.

The reply audio is transcribed by pocketsphinx in its general English mode
(never the cascade's own domain LM, which would answer in-domain for any
sound) and must contain the expected key word.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from pocketsphinx import Decoder
from websockets.asyncio.client import connect

from clients.groundtruth import espeak, with_silence
from models.domain import key_word_hit, normalize
from streaming.audio import float32_to_pcm16, resample
from tests.conftest import Received, collect_until, stream_realtime

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(not (ROOT / "bundles/textlm/manifest.json").is_file(), reason="text LM bundle not built"),
]


def general_english(audio24k: np.ndarray) -> str:
    d = Decoder(samprate=16000, loglevel="FATAL")
    d.start_utt()
    d.process_raw(float32_to_pcm16(resample(audio24k, 24000, 16000)), False, True)
    d.end_utt()
    return d.hyp().hypstr if d.hyp() else ""


@pytest.mark.parametrize(
    ("question", "key_word"),
    # pocketsphinx misreads much espeak-ng speech (WER 0.35 on held-out voices, see
    # clients/bench/asr_eval.py), and piper's speech varies randomly from run to run;
    # this question is read right by both recognizers run after run, so a failure here
    # means the path broke rather than the ASR
    [("count from three to eight", "eight")],
)
async def test_cascade_answers_a_spoken_question(start_server_with, question: str, key_word: str) -> None:
    rs, stop = await start_server_with(pipelines="cascade")
    try:
        assert "cascade" in rs.app.pipelines, rs.app.skipped
        x = with_silence(espeak(question), 16000, 0.4, 1.0)
        rec = Received()
        async with connect(rs.url) as ws:
            rec.add(await ws.recv())
            sender = asyncio.create_task(stream_realtime(ws, x))
            await collect_until(ws, rec, lambda e: e["type"] == "response.done", timeout=15)
            await sender
            # keep the session open a moment: a finished reply leaves the session usable
            await ws.send(json.dumps({"type": "ping"}))
            await collect_until(ws, rec, lambda e: e["type"] == "pong")
    finally:
        await stop()
    done = rec.of("response.done")[0]
    assert done["status"] == "completed"
    heard = "".join(e["delta"] for e in rec.of("transcript.delta") if e["role"] == "user")
    said = "".join(e["delta"] for e in rec.of("transcript.delta") if e["role"] == "assistant")
    assert said == done["text"] and said
    for stage in ("endpoint_ms", "asr_finalize_ms", "llm_first_token_ms", "tts_first_audio_ms", "first_send_ms"):
        assert done["timings"].get(stage) is not None, (stage, done["timings"])
    audio = np.concatenate(rec.audio[done["response_id"]])
    transcript = general_english(audio)
    assert key_word_hit(transcript, key_word), (heard, said, transcript)
    assert normalize(said)  # a reply was produced in text too


async def test_a_held_turn_keeps_its_recognized_question_while_the_next_turn_is_heard() -> None:
    """``create_response: false``: ``hold_turn`` finishes the recognition of the ended
    turn, so the ASR stream is free for the next turn and a later reply answers the held one."""
    from server.config import ServerConfig
    from server.pipelines.base import ReplyText, StageTiming, Turn
    from server.pipelines.cascade import CascadePipeline
    from server.worker import InferenceWorker

    pipe = CascadePipeline(ServerConfig(bundles_dir=str(ROOT / "bundles")))
    worker = InferenceWorker()
    worker.start()
    try:
        s = pipe.open_session(worker)
        first = with_silence(espeak("count from three to eight"), 16000, 0.3, 0.3)
        second = with_silence(espeak("goodbye"), 16000, 0.3, 0.3)
        await s.on_speech_start(first[:320])
        await s.on_audio(first[320:])
        held = await s.hold_turn(first)
        await s.on_speech_start(second[:320])  # the next turn is being heard
        await s.on_audio(second[320:])
        out = [i async for i in s.respond(Turn(response_id=1, audio=first, held=held))]
    finally:
        worker.stop()
    user = "".join(i.delta for i in out if isinstance(i, ReplyText) and i.role == "user")
    said = "".join(i.delta for i in out if isinstance(i, ReplyText) and i.role == "assistant")
    assert isinstance(held, str) and user == held and normalize(held).endswith("three to eight"), held
    assert not any(isinstance(i, StageTiming) and i.name == "asr_finalize_ms" for i in out)
    assert normalize(said).endswith("eight"), said
