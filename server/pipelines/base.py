"""The one interface every pipeline (echo, cascade, fused) plugs in behind.

A :class:`Pipeline` holds shared weights and is created once per server. Each
websocket session opens its own :class:`PipelineSession`, a small stateful
object that sees the input audio as it arrives and produces replies.

Model work never runs on the event loop: pipelines submit it to the
:class:`server.worker.InferenceWorker` they were given.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np

from server.worker import InferenceWorker


@dataclass(frozen=True)
class Turn:
    """One user turn handed to :meth:`PipelineSession.respond`.

    ``audio`` is float32 at 16 kHz: the utterance with its prefix padding
    (empty for text input). ``text`` is set for text input.
    """

    response_id: int
    audio: np.ndarray = field(repr=False)
    text: str | None = None
    reason: str = "silence"
    held: object = None  # what :meth:`PipelineSession.hold_turn` kept of an ended turn


@dataclass(frozen=True)
class ReplyText:
    """A piece of transcript: the assistant's reply, or the user's recognized words."""

    delta: str
    role: str = "assistant"


@dataclass(frozen=True)
class ReplyAudio:
    """Reply audio, float32 mono at ``sample_rate``."""

    pcm: np.ndarray = field(repr=False)
    sample_rate: int


@dataclass(frozen=True)
class StageTiming:
    """A stage duration in ms, measured on the server's clock (see LATENCY.md)."""

    name: str
    ms: float


ReplyEvent = ReplyText | ReplyAudio | StageTiming


def elapsed_ms(t0: float) -> float:
    """Milliseconds since ``t0`` (a ``time.perf_counter()`` value), for stage timings."""
    return (time.perf_counter() - t0) * 1000


class PipelineSession(ABC):
    """Per-session pipeline state. All methods are called from the event loop."""

    async def on_speech_start(self, audio16k: np.ndarray) -> None:  # noqa: B027 - optional hook
        """The VAD heard the user start: the turn's audio so far, prefix padding included."""

    async def on_audio(self, pcm16k: np.ndarray) -> None:  # noqa: B027 - optional hook
        """Every chunk of 16 kHz input audio, as it arrives (for streaming models)."""

    async def on_pause(self, silence_ms: float) -> None:  # noqa: B027 - optional hook
        """The VAD hears silence inside the user's turn (``silence_ms`` so far, this window
        included), just before :meth:`end_of_turn_probability` is read for that window."""

    def end_of_turn_probability(self) -> float | None:
        """The model's belief that the user has finished (None: no learned end of turn)."""
        return None

    @abstractmethod
    def respond(self, turn: Turn) -> AsyncIterator[ReplyEvent]:
        """Yield the reply. Cancelling the consuming task stops it."""

    async def hold_turn(self, audio16k: np.ndarray) -> object:
        """The user's turn ended without a reply (``create_response`` false): keep what a
        later reply to it needs, as the next turns go on. The session passes it back as
        ``Turn.held``. None (the default): the reply is made from ``Turn.audio`` alone."""
        return None

    def truncate(self, played_ms: float, *, barge_in: bool = True) -> None:  # noqa: B027 - optional hook
        """Keep only the first ``played_ms`` of the last reply in context: after a barge-in,
        or (``barge_in`` false) a cancel by the client."""

    def reset_turn(self) -> None:  # noqa: B027 - optional hook
        """Forget the current user turn's input (``input.clear``)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release per-session resources."""


class Pipeline(ABC):
    """Shared, loaded-once part of a pipeline."""

    name: str = ""
    description: str = ""
    default_turn_mode: str = "vad"
    # turn_detection settings this pipeline is best with (override the server's)
    turn_defaults: dict[str, float | str] = {}  # noqa: RUF012 - read-only class default

    @abstractmethod
    def open_session(self, worker: InferenceWorker) -> PipelineSession: ...

    def warmup(self) -> None:  # noqa: B027 - optional hook
        """Run once at startup, in the worker, so the first turn is not slow."""

    def providers(self) -> list[str]:
        """ONNX Runtime providers of the pipeline's main model, the one that runs first."""
        return []
