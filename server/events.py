"""Internal events: what every wire protocol translates to and from.

Inbound events (client -> session) and outbound events (session -> client)
are plain frozen dataclasses. Protocol adapters (``server.protocol.*``) are
the only code that knows how they look on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# ---- inbound -------------------------------------------------------------


@dataclass(frozen=True)
class AudioIn:
    """PCM16LE mono audio at the session's input rate."""

    pcm: bytes


@dataclass(frozen=True)
class ConfigChange:
    session: dict[str, Any]
    event_id: str | None = None


@dataclass(frozen=True)
class Commit:
    """Push-to-talk: the user's turn is over now."""

    event_id: str | None = None


@dataclass(frozen=True)
class ClearInput:
    event_id: str | None = None


@dataclass(frozen=True)
class TextIn:
    text: str
    event_id: str | None = None


@dataclass(frozen=True)
class Cancel:
    event_id: str | None = None


@dataclass(frozen=True)
class Respond:
    """Answer the latest user turn that ended without a reply (``create_response`` false)."""

    event_id: str | None = None


@dataclass(frozen=True)
class PlaybackPosition:
    response_id: int
    played_ms: float
    event_id: str | None = None


@dataclass(frozen=True)
class Ping:
    event_id: str | None = None


InEvent = AudioIn | ConfigChange | Commit | ClearInput | TextIn | Cancel | Respond | PlaybackPosition | Ping

# ---- outbound ------------------------------------------------------------


@dataclass(frozen=True)
class SessionCreated:
    session_id: str
    session: dict[str, Any]
    pipelines: list[str]


@dataclass(frozen=True)
class SessionUpdated:
    session: dict[str, Any]


@dataclass(frozen=True)
class SpeechStarted:
    audio_ms: float


@dataclass(frozen=True)
class SpeechStopped:
    audio_ms: float
    reason: str


@dataclass(frozen=True)
class ResponseStarted:
    response_id: int
    pipeline: str
    sample_rate: int
    input_audio_ms: float | None = None


@dataclass(frozen=True)
class TranscriptDelta:
    role: str
    delta: str
    response_id: int | None = None


@dataclass(frozen=True)
class AudioOut:
    """Reply audio: float32 PCM at the session's output rate.

    ``offset`` is the sample offset of ``pcm[0]`` within the response.
    """

    response_id: int
    offset: int
    pcm: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class ResponseDone:
    response_id: int
    status: str
    audio_ms: float
    timings: dict[str, float | None]
    text: str = ""


@dataclass(frozen=True)
class Interrupted:
    response_id: int
    sent_ms: float
    truncated_ms: float
    audio_ms: float


@dataclass(frozen=True)
class Error:
    code: str
    message: str
    event_id: str | None = None
    fatal: bool = False


@dataclass(frozen=True)
class Pong:
    event_id: str | None = None
    input_samples: int = 0  # audio samples accepted from this client so far (at their rates)


OutEvent = (
    SessionCreated
    | SessionUpdated
    | SpeechStarted
    | SpeechStopped
    | ResponseStarted
    | TranscriptDelta
    | AudioOut
    | ResponseDone
    | Interrupted
    | Error
    | Pong
)


class ErrorCode:
    """Stable error codes sent in ``error`` events (see docs/protocol.md)."""

    INVALID_JSON = "invalid_json"
    INVALID_EVENT = "invalid_event"
    UNKNOWN_EVENT = "unknown_event"
    INVALID_AUDIO = "invalid_audio"
    MESSAGE_TOO_LARGE = "message_too_large"
    RATE_LIMITED = "rate_limited"
    RESPONSE_IN_PROGRESS = "response_in_progress"
    NO_RESPONSE = "no_response"
    UNKNOWN_PIPELINE = "unknown_pipeline"
    INVALID_CONFIG = "invalid_config"
    PIPELINE_ERROR = "pipeline_error"
    OVERLOADED = "overloaded"
    IDLE_TIMEOUT = "idle_timeout"
    SESSION_TOO_LONG = "session_too_long"
    INTERNAL = "internal_error"
