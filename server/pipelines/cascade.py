"""The ``cascade`` baseline: VAD endpoint -> pocketsphinx -> text LM -> piper TTS.

Built the way good cascades are built: the ASR is fed while the user speaks
and only finalized at the endpoint; the LM streams tokens; each clause is
spoken as soon as the LM completes it, and its audio is streamed in small
chunks. Same brain (the built-in text LM) and same voice (joe) as the fused
model. Its end of turn is Silero VAD plus a silence hangover (500 ms by
default), so it cuts users off in longer pauses: part of the honest
comparison.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from models.asr import AsrStream, Recognizer
from models.domain import normalize
from models.runtime import RuntimeOptions
from models.textlm import TextLM
from models.tts import ClauseSplitter, PiperTTS
from server.config import ServerConfig
from server.pipelines.base import (
    Pipeline,
    PipelineSession,
    ReplyAudio,
    ReplyEvent,
    ReplyText,
    StageTiming,
    Turn,
    elapsed_ms,
)
from server.worker import InferenceWorker

CHUNK_S = 0.04  # reply audio is handed on in 40 ms pieces


class CascadeSession(PipelineSession):
    def __init__(self, p: CascadePipeline, worker: InferenceWorker) -> None:
        self.p = p
        self.worker = worker
        self.asr: AsrStream = p.recognizer.stream()
        self.lm_state = p.lm.new_state()

    async def on_speech_start(self, audio16k: np.ndarray) -> None:
        await self.worker.run(self.asr.start)
        await self.worker.run(self.asr.feed, audio16k)

    async def on_audio(self, pcm16k: np.ndarray) -> None:
        if self.asr.active:
            await self.worker.run(self.asr.feed, pcm16k)

    def reset_turn(self) -> None:
        if self.asr.active:
            self.asr.finish()

    def close(self) -> None:
        self.asr.close()

    async def hold_turn(self, audio16k: np.ndarray) -> object:
        """The recognized question: the ASR stream is needed by the next turn."""
        return await self._recognize(audio16k)

    async def _recognize(self, audio16k: np.ndarray) -> str:
        if self.asr.active:
            return await self.worker.run(self.asr.finish)
        # push-to-talk with no detected speech: decode the committed audio at once
        await self.worker.run(self.asr.start)
        await self.worker.run(self.asr.feed, audio16k)
        return await self.worker.run(self.asr.finish)

    async def respond(self, turn: Turn) -> AsyncIterator[ReplyEvent]:
        if turn.text is not None:
            question = turn.text
        elif isinstance(turn.held, str):  # recognized when the turn ended (hold_turn)
            question = turn.held
            yield ReplyText(question, role="user")
        else:
            t0 = time.perf_counter()
            question = await self._recognize(turn.audio)
            yield StageTiming("asr_finalize_ms", elapsed_ms(t0))
            yield ReplyText(question, role="user")
        t0 = time.perf_counter()
        lm, tts = self.p.lm, self.p.tts
        await self.worker.run(lm.start_reply, self.lm_state, normalize(question) or "um")
        splitter = ClauseSplitter()
        first_token = first_audio = True
        while True:
            piece = await self.worker.run(lm.next_piece, self.lm_state)
            if first_token:
                yield StageTiming("llm_first_token_ms", elapsed_ms(t0))
                first_token = False
            clauses = splitter.flush() if piece is None else splitter.push(piece)
            if piece is not None:
                yield ReplyText(piece)
            for clause in clauses:
                t1 = time.perf_counter()
                audio = await self.worker.run(tts.synthesize, clause)
                if first_audio:
                    yield StageTiming("tts_first_audio_ms", elapsed_ms(t1))
                    first_audio = False
                step = int(CHUNK_S * tts.sample_rate)
                for i in range(0, len(audio), step):
                    yield ReplyAudio(audio[i : i + step], tts.sample_rate)
            if piece is None:
                break


class CascadePipeline(Pipeline):
    name = "cascade"
    description = "baseline: Silero VAD + pocketsphinx + text LM + piper TTS"
    default_turn_mode = "vad"

    def __init__(self, cfg: ServerConfig) -> None:
        opts = RuntimeOptions(device=cfg.device, intra_op_threads=cfg.ort_threads)
        self.recognizer = Recognizer()
        self.lm = TextLM(Path(cfg.bundles_dir) / "textlm", options=opts)
        self.tts = PiperTTS(options=opts)

    def providers(self) -> list[str]:
        return self.lm.providers

    def warmup(self) -> None:
        self.recognizer.transcribe(np.zeros(1600, np.float32))
        self.lm.generate("hello")
        self.tts.synthesize("Hello.")

    def open_session(self, worker: InferenceWorker) -> PipelineSession:
        return CascadeSession(self, worker)
