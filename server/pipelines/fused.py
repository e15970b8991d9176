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
a barge-in needs no further truncation. One exception: the head may end a
turn in a pause before a trailing "please" or "um", and the user then says it
over the reply. The user's side of the state keeps hearing the input for
:data:`CONTINUE_MS` after the end of turn; a turn that interrupts the reply
within that time and says only :data:`FILLERS` continues the question from it
and is answered whole (a new question, however soon, starts fresh).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.codec import CodecDecoder, CodecStream
from models.domain import TRAILING_FILLERS
from models.fused import (
    LOOK_MARGIN_MS,
    LOOK_RECENT,
    FusedModel,
    FusedOptions,
    FusedState,
    look_ms,
    look_tail,
)
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
    elapsed_ms,
)
from server.worker import InferenceWorker
from streaming.level import first_audible

FIRST_CHUNK = 2  # token frames in the first codec chunk (smallest, for latency)
CHUNK = 6  # token frames per later chunk
SPEC_AUDIBLE_MS = 100  # audible audio a speculation decodes before the decision
# Input heard after the end of turn within which an interrupting turn continues the same
# question: the domain allows 700 ms pauses; the end of turn comes ~100 ms into one and a
# barge-in needs ~100 ms of speech.
CONTINUE_MS = 1000.0
# A turn of only the words the domain lets follow a complete question ("please", "um",
# "uh") goes on with the last question.
FILLERS = TRAILING_FILLERS
_CLAUSE_END = re.compile(r"[.!?]$")


@dataclass
class _Speculation:
    """A reply begun while the user may still be talking (end-of-turn head already high).

    Valid only while the session's current transcript (:meth:`FusedSession._heard`) is
    the one it answers.
    """

    state: FusedState
    heard: list[int] = field(default_factory=list)  # the user pieces it answers
    texts: list[str] = field(default_factory=list)  # the first clause's pieces
    tokens: np.ndarray | None = None  # that clause's codec tokens
    stream: CodecStream | None = None
    pcm: np.ndarray | None = None  # the first decoded chunk
    used: int = 0  # token frames already decoded
    done: bool = False  # the reply ended within the first clause


class FusedSession(PipelineSession):
    def __init__(self, p: FusedPipeline, worker: InferenceWorker) -> None:
        self.p = p
        self.worker = worker
        self.state = p.model.new_state()
        self.listening = False
        self.eot = 0.0
        self.truncated_ms: float | None = None
        self.spec: _Speculation | None = None
        self.look: FusedState | None = None  # the latest lookahead copy, while it is current
        self.recent = np.zeros(0, np.float32)  # the last input, repeated by lookahead
        self.replying = False  # respond() is running on its own state
        # After the end of turn :attr:`state` keeps hearing the input for this many more ms,
        # so a barge-in that soon (``cut``: the reply was interrupted) may continue the turn:
        # then ``merged`` is that state, hearing on beside the fresh one.
        self.continue_left_ms = 0.0
        self.cut = False
        self.merged: FusedState | None = None

    def _heard(self) -> FusedState:
        """The state that best knows what the user said: the latest lookahead copy while it
        is current (it heard the encoder's late last piece), else the real state."""
        return self.look if self.look is not None else self.state

    def _goes_on(self) -> FusedState | None:
        """The continued state, when this turn (heard so far) is only fillers."""
        if self.merged is None:
            return None
        words = self.p.model.heard_text(self._heard()).split()
        return self.merged if words and all(w in FILLERS for w in words) else None

    def _push(self, pcm16k: np.ndarray) -> float:
        """Worker job: hear a chunk; when the turn looks complete, begin the reply at once."""
        m = self.p.model
        self.recent = np.concatenate([self.recent, pcm16k])[-LOOK_RECENT:]
        m.push_audio(self.state, pcm16k)
        real = self.state.user_ids
        if self.look is not None and real != self.look.user_ids[: len(real)]:
            self.look = None  # the real encoder heard something the lookahead did not
        if self.merged is not None:
            m.push_audio(self.merged, pcm16k)
            if (merged := self._goes_on()) is not None:
                return m.end_of_turn_probability(merged)
        p = m.end_of_turn_probability(self.state)
        if p >= self.p.speculate_above and (self.spec is None or self.spec.heard != self._heard().user_ids):
            self.spec = self._speculate(m.clone_state(self._heard()))
        return p

    def _hear(self, pcm16k: np.ndarray) -> None:
        """Worker job after the end of turn: the user's side of the state hears on (no head,
        no speculation: a reply is running)."""
        self.recent = np.concatenate([self.recent, pcm16k])[-LOOK_RECENT:]
        self.p.model.push_audio(self.state, pcm16k)

    def _look(self, silence_ms: float) -> float:
        """Worker job ``silence_ms`` into a VAD pause: the head on a copy of the state that
        also heard up to ``lookahead_ms`` more of the background (:func:`look_ms`; the
        encoder's late last piece arrives there now); a confident head begins the reply from
        that copy."""
        m = self.p.model
        if not self.state.user_ids:
            return 0.0
        tail = look_tail(self.recent, look_ms(self.p.lookahead_ms, silence_ms))
        look = self.look = m.lookahead(self.state, tail)
        if (merged := self._goes_on()) is not None:
            return m.end_of_turn_probability(merged)
        p = m.head_probability(look)
        if p >= self.p.speculate_above and (self.spec is None or self.spec.heard != look.user_ids):
            self.spec = self._speculate(m.clone_state(look))
        return p

    def _speculate(self, st: FusedState) -> _Speculation:
        """Begin the reply on ``st`` (a copy): the first clause's text, tokens, first PCM."""
        m, codec = self.p.model, self.p.codec
        spec = _Speculation(st, list(st.user_ids))
        m.start_reply(st)
        clause = ""
        while not _CLAUSE_END.search(clause.rstrip()):
            piece = m.next_text_piece(st)
            if piece is None:
                spec.done = True
                break
            spec.texts.append(piece)
            clause += piece
        if clause.strip():
            spec.tokens = m.audio_tokens_for(clause)
            spec.stream = codec.new_stream()
            # Decode small chunks until SPEC_AUDIBLE_MS past the first audible sample: the
            # session drops a reply's leading silence, so a silent first chunk would leave the
            # first sound to after the decision, and a barely audible one would leave the
            # client's buffer a few ms deep when the reply starts.
            pcms: list[np.ndarray] = []
            rate = codec.config.sample_rate
            done, audible_from = 0, None
            while spec.used < spec.tokens.shape[1]:
                n = min(FIRST_CHUNK, spec.tokens.shape[1] - spec.used)
                pcms.append(codec.decode(spec.stream, spec.tokens[:, spec.used : spec.used + n]))
                spec.used += n
                if audible_from is None and len(pcms[-1]):
                    at = first_audible(pcms[-1], rate)
                    audible_from = None if at is None else done + at
                done += len(pcms[-1])
                if audible_from is not None and done - audible_from >= rate * SPEC_AUDIBLE_MS / 1000:
                    break
            spec.pcm = np.concatenate(pcms) if pcms else None
        return spec

    async def on_speech_start(self, audio16k: np.ndarray) -> None:
        self.spec = self.look = None
        go_on, self.continue_left_ms, self.cut = self.cut and self.continue_left_ms > 0, 0.0, False
        # the continued state has heard every input chunk up to now; the fresh one hears this
        # turn from its start, and a turn of only fillers goes on with the question
        continued, self.merged = (self.state if go_on else None), None
        self.recent = np.zeros(0, np.float32)
        if go_on or self.replying:
            # the continued state, or the state of a reply this turn does not interrupt,
            # stays as it is
            self.state = await self.worker.run(self.p.model.new_state)
        else:
            await self.worker.run(self.p.model.reset_turn, self.state)
        self.listening = True
        self.eot = await self.worker.run(self._push, audio16k)
        self.merged = continued

    async def on_audio(self, pcm16k: np.ndarray) -> None:
        if self.listening:
            self.eot = await self.worker.run(self._push, pcm16k)
        elif self.continue_left_ms > 0:
            self.continue_left_ms -= len(pcm16k) * 1000 / 16000
            await self.worker.run(self._hear, pcm16k)

    async def on_pause(self, silence_ms: float) -> None:
        # Past lookahead_ms of real silence the real encoder has caught up: no copy needed.
        if not self.listening:
            return
        if 0 < silence_ms <= self.p.lookahead_ms + LOOK_MARGIN_MS:
            self.eot = await self.worker.run(self._look, silence_ms)
        else:
            self.look = None  # the real encoder has heard as much silence: it is the reference

    def end_of_turn_probability(self) -> float | None:
        return self.eot if self.listening else 0.0

    def reset_turn(self) -> None:
        self.listening = False
        self.eot = 0.0
        self.spec = self.look = None
        self.continue_left_ms, self.cut, self.merged = 0.0, False, None

    async def hold_turn(self, audio16k: np.ndarray) -> object:
        """A copy of the state that heard the turn (the lookahead copy while it is current);
        the next turn resets :attr:`state` and never touches it."""
        m = self.p.model
        held = await self.worker.run(lambda: m.clone_state(self._goes_on() or self._heard()))
        self.reset_turn()
        return held

    def truncate(self, played_ms: float, *, barge_in: bool = True) -> None:
        # The next user turn resets the context (or, after a barge-in within continue_ms,
        # continues the question from the user's side of the state); the reply's state is
        # dropped.
        self.truncated_ms = played_ms
        self.cut = barge_in

    def _speak(self, clause: str) -> np.ndarray:
        return self.p.model.audio_tokens_for(clause)

    async def respond(self, turn: Turn) -> AsyncIterator[ReplyEvent]:
        self.replying = True
        try:
            async for item in self._respond(turn):
                yield item
        finally:
            self.replying = False

    async def _respond(self, turn: Turn) -> AsyncIterator[ReplyEvent]:
        """The reply, on its own state ``st``: a user turn that begins meanwhile (without
        interrupting it) gets a fresh state in :meth:`on_speech_start`."""
        m, codec, run = self.p.model, self.p.codec, self.worker.run
        self.listening = False
        self.eot = 0.0
        t0 = time.perf_counter()
        spec, self.spec = self.spec, None
        st = self.state
        self.continue_left_ms, self.cut = 0.0, False
        if turn.text is not None:  # text input: the LM reads it as exact (one-hot) pieces
            spec = None
            await run(m.reset_turn, st)
            await run(m.push_text, st, turn.text)
        elif isinstance(turn.held, FusedState):  # a turn that ended earlier, kept by hold_turn
            spec, st = None, turn.held
        elif (merged := await run(self._goes_on)) is not None:  # "please" after the question
            spec, st = None, merged
            self.state = await run(m.clone_state, merged)  # the user's side hears on
            self.continue_left_ms = self.p.continue_ms
        else:
            st = self._heard()  # the current lookahead copy heard the last piece
            if spec is None and st is self.state:  # the reply must not touch the user's side
                st = await run(m.clone_state, st)
            self.continue_left_ms = self.p.continue_ms
        self.look = self.merged = None
        if spec is not None and spec.heard != st.user_ids:
            spec = None  # it answers something else than what is now heard
        heard = m.heard_text(st)
        if heard:
            yield ReplyText(heard, role="user")
        yield StageTiming("speculative", 1.0 if spec is not None else 0.0)
        first_audio = True
        if spec is not None:
            st = spec.state
            for text in spec.texts:
                yield ReplyText(text)
            stream = spec.stream or codec.new_stream()
            if spec.pcm is not None and len(spec.pcm):
                yield StageTiming("first_audio_total_ms", elapsed_ms(t0))
                first_audio = False
                yield ReplyAudio(spec.pcm, codec.config.sample_rate)
            if spec.tokens is not None:
                async for item in self._decode(stream, spec.tokens[:, spec.used :], first_audio, t0):
                    first_audio = False
                    yield item
            if spec.done:
                async for item in self._flush(stream):
                    yield item
                return
        else:
            await run(m.start_reply, st)
            yield StageTiming("lm_first_step_ms", elapsed_ms(t0))
            stream = codec.new_stream()
        clause = ""
        while True:
            piece: str | None = await run(m.next_text_piece, st)
            if piece is not None:
                clause += piece
                yield ReplyText(piece)
            if piece is None or _CLAUSE_END.search(clause.rstrip()):
                if clause.strip():
                    t1 = time.perf_counter()
                    tokens = await run(self._speak, clause)
                    if first_audio:
                        yield StageTiming("audio_tokens_ms", elapsed_ms(t1))
                    async for item in self._decode(stream, tokens, first_audio, t0):
                        first_audio = False
                        yield item
                clause = ""
            if piece is None:
                break
        async for item in self._flush(stream):
            yield item

    async def _decode(
        self, stream: CodecStream, tokens: np.ndarray, first: bool, t0: float
    ) -> AsyncIterator[ReplyEvent]:
        """Codec tokens -> PCM in chunks, the first one smallest."""
        codec = self.p.codec
        k = 0
        while k < tokens.shape[1]:
            n = FIRST_CHUNK if first else CHUNK
            t2 = time.perf_counter()
            pcm = await self.worker.run(codec.decode, stream, tokens[:, k : k + n])
            k += n
            if len(pcm):
                if first:
                    yield StageTiming("codec_first_pcm_ms", elapsed_ms(t2))
                    yield StageTiming("first_audio_total_ms", elapsed_ms(t0))
                    first = False
                yield ReplyAudio(pcm, codec.config.sample_rate)

    async def _flush(self, stream: CodecStream) -> AsyncIterator[ReplyEvent]:
        tail = await self.worker.run(self.p.codec.flush, stream)
        if len(tail):
            yield ReplyAudio(tail, self.p.codec.config.sample_rate)


class FusedPipeline(Pipeline):
    name = "fused"
    description = "one audio-token model: streaming encoder + LM + audio head, codec decoder"
    default_turn_mode = "semantic"
    def __init__(self, cfg: ServerConfig) -> None:
        opts = RuntimeOptions(device=cfg.device, intra_op_threads=cfg.ort_threads)
        bundles = Path(cfg.bundles_dir)
        self.model = FusedModel(bundles / "fused", options=FusedOptions(runtime=opts))
        self.codec = CodecDecoder(bundles / "codec", options=opts)
        # The end-of-turn threshold was tuned with the model (its manifest); speculation
        # begins a reply as soon as the head crosses it, before the VAD confirms.
        self.speculate_above = self.model.eot_threshold
        self.lookahead_ms = self.model.lookahead_ms
        self.continue_ms = CONTINUE_MS
        self.turn_defaults = {
            "mode": "semantic",
            "stop_ms": 1500.0,
            "min_silence_ms": self.model.min_silence_ms,
            "eot_threshold": self.model.eot_threshold,
            "level_gate": self.model.level_gate,
            "level_gate_depth_db": self.model.level_gate_depth_db,
            "late_eot_threshold": self.model.late_threshold,
            "late_silence_ms": self.model.late_silence_ms,
            "low_snr_min_silence_ms": self.model.low_snr_min_silence_ms,
            "low_snr_headroom_db": self.model.low_snr_headroom_db,
            "low_snr_pause_prob": self.model.low_snr_pause_prob,
        }

    def warmup(self) -> None:
        st = self.model.new_state()
        self.model.push_audio(st, np.zeros(3200, np.float32))
        self.model.start_reply(st)
        self.model.next_text_piece(st)
        s = self.codec.new_stream()
        self.codec.decode(s, self.model.audio_tokens_for("Hello."))
        self.codec.flush(s)

    def providers(self) -> list[str]:
        return list(self.model.lm.get_providers())

    def open_session(self, worker: InferenceWorker) -> PipelineSession:
        return FusedSession(self, worker)
