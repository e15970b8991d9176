"""The ``fused`` pipeline: one audio-token model hears the user and answers in codec tokens.

While the user speaks, every input chunk goes through the model's front end,
streaming encoder and LM ingestion (:meth:`models.fused.FusedModel.push_audio`),
so nothing is left to prefill when the turn ends. The model's end-of-turn
head drives the endpoint (``semantic`` turn detection, confirmed by a short
VAD silence; 1.5 s of silence is the fallback). The reply's text pieces come
from the LM; each clause is turned into codec tokens by the audio head and
decoded by the streaming codec decoder in small chunks, the first smallest.

Every turn is independent (BUILTIN_ASSISTANT.md), so each new user turn
resets the model's context: it stays bounded for sessions of any length, and
a barge-in needs no further truncation.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from models.codec import CodecDecoder
from models.fused import FusedModel, FusedOptions
from models.runtime import RuntimeOptions
from server.config import ServerConfig
from server.pipelines.base import (
    Pipeline,
    PipelineSession,
    ReplyAudio,
    ReplyEvent,
    ReplyText,
    StageTiming,
    Turn,
)
from server.worker import InferenceWorker

FIRST_CHUNK = 2  # token frames in the first codec chunk (smallest, for latency)
CHUNK = 6  # token frames per later chunk
_CLAUSE_END = re.compile(r"[.!?]$")


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


class FusedSession(PipelineSession):
    def __init__(self, p: FusedPipeline, worker: InferenceWorker) -> None:
        self.p = p
        self.worker = worker
        self.state = p.model.new_state()
        self.listening = False
        self.eot = 0.0
        self.truncated_ms: float | None = None

    def _push(self, pcm16k: np.ndarray) -> float:
        self.p.model.push_audio(self.state, pcm16k)
        return self.p.model.end_of_turn_probability(self.state)

    async def on_speech_start(self, audio16k: np.ndarray) -> None:
        await self.worker.run(self.p.model.reset_turn, self.state)
        self.listening = True
        self.eot = await self.worker.run(self._push, audio16k)

    async def on_audio(self, pcm16k: np.ndarray) -> None:
        if self.listening:
            self.eot = await self.worker.run(self._push, pcm16k)

    def end_of_turn_probability(self) -> float | None:
        return self.eot if self.listening else 0.0

    def reset_turn(self) -> None:
        self.listening = False
        self.eot = 0.0

    def truncate(self, played_ms: float) -> None:
        # The next user turn resets the context; nothing after the played part is kept.
        self.truncated_ms = played_ms

    def _speak(self, clause: str) -> np.ndarray:
        return self.p.model.audio_tokens_for(clause)

    async def respond(self, turn: Turn) -> AsyncIterator[ReplyEvent]:
        m, codec, run = self.p.model, self.p.codec, self.worker.run
        self.listening = False
        self.eot = 0.0
        t0 = time.perf_counter()
        if turn.text is not None:  # text input: the LM reads it as exact (one-hot) pieces
            await run(m.reset_turn, self.state)
            await run(m.push_text, self.state, turn.text)  # type: ignore[attr-defined]
        heard = m.heard_text(self.state)
        if heard:
            yield ReplyText(heard, role="user")
        await run(m.start_reply, self.state)
        yield StageTiming("lm_first_step_ms", _ms(t0))
        stream = codec.new_stream()
        clause = ""
        first_audio = True
        while True:
            piece = await run(m.next_text_piece, self.state)
            if piece is not None:
                clause += piece
                yield ReplyText(piece)
            if piece is None or _CLAUSE_END.search(clause.rstrip()):
                if clause.strip():
                    t1 = time.perf_counter()
                    tokens = await run(self._speak, clause)
                    if first_audio:
                        yield StageTiming("audio_tokens_ms", _ms(t1))
                    k = 0
                    while k < tokens.shape[1]:
                        n = FIRST_CHUNK if first_audio else CHUNK
                        t2 = time.perf_counter()
                        pcm = await run(codec.decode, stream, tokens[:, k : k + n])
                        k += n
                        if len(pcm):
                            if first_audio:
                                yield StageTiming("codec_first_pcm_ms", _ms(t2))
                                yield StageTiming("first_audio_total_ms", _ms(t0))
                                first_audio = False
                            yield ReplyAudio(pcm, codec.config.sample_rate)
                clause = ""
            if piece is None:
                break
        tail = await run(codec.flush, stream)
        if len(tail):
            yield ReplyAudio(tail, codec.config.sample_rate)


class FusedPipeline(Pipeline):
    name = "fused"
    description = "one audio-token model: streaming encoder + LM + audio head, codec decoder"
    default_turn_mode = "semantic"
    turn_defaults = {"mode": "semantic", "stop_ms": 1500.0, "min_silence_ms": 64.0}

    def __init__(self, cfg: ServerConfig) -> None:
        opts = RuntimeOptions(device=cfg.device, intra_op_threads=cfg.ort_threads)
        bundles = Path(cfg.bundles_dir)
        self.model = FusedModel(bundles / "fused", options=FusedOptions(runtime=opts))
        self.codec = CodecDecoder(bundles / "codec", options=opts)

    def warmup(self) -> None:
        st = self.model.new_state()
        self.model.push_audio(st, np.zeros(3200, np.float32))
        self.model.start_reply(st)
        self.model.next_text_piece(st)
        s = self.codec.new_stream()
        self.codec.decode(s, self.model.audio_tokens_for("Hello."))
        self.codec.flush(s)

    def open_session(self, worker: InferenceWorker) -> PipelineSession:
        return FusedSession(self, worker)
