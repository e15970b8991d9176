"""Turn taking as a pure, synchronous state machine over VAD frame probabilities.

Feed :meth:`Endpointer.step` one speech probability per VAD frame (32 ms at
16 kHz); it returns the events that frame caused. Nothing here reads a clock:
every event carries a position on the session's audio timeline, in frames, so
the caller converts with ``frame * frame_s`` and timing stays exact whatever
the event loop's lag.

Positions are frame *boundaries*: frame ``k`` covers ``[k, k + 1) * frame_s``.

- ``SpeechStarted(frame=k)``: ``k`` is the first frame of the speech run.
- ``SpeechStopped(frame=k)``: ``k`` is the first silent frame after speech
  (where speech ended), not the frame where the hangover expired.
- ``EndOfTurn(frame=k)``: ``k`` is where the decision was taken (the end of
  the frame that triggered it); ``speech_end`` repeats where speech ended, so
  ``frame - speech_end`` is the endpointing delay.
- ``BargeIn(frame=k)``: ``k`` is the first frame of the interrupting speech.
  Speech must last ``barge_in_s``, or only ``loud_barge_in_s`` when the caller
  marks each of its frames ``loud`` (clearly the user's voice, not a faint
  echo of the reply).

Phases::

    LISTENING --speech >= start_s--> USER_SPEAKING --silence >= stop_s--> LISTENING
        |  ^                              ^   (EndOfTurn)
        |  | response_finished()          | speech >= barge_in_s (BargeIn)
        v  |                              |
    RESPONDING ---------------------------+
    (response_started())

Speech detection uses hysteresis like Silero's own ``get_speech_timestamps``:
a frame counts as speech when ``prob >= threshold``; once speaking, only
``prob < neg_threshold`` starts a pause, and during a pause a frame at or
above ``threshold`` resumes the speech. Speech must last ``start_s`` (all
frames at or above ``threshold``) to start, so short blips are ignored.

End of turn: by default ``stop_s`` of silence ends the turn. An external
end-of-turn model (e.g. a learned detector) may pass ``eot_prob`` with each
frame: when it is at least ``eot_threshold`` after ``min_silence_s`` of
silence, the turn ends early (reason ``"external"``), as it does when it is
at least ``late_eot_threshold`` after ``late_silence_s``; ``stop_s`` stays the
fallback. ``max_turn_s`` forces the end of a turn that never pauses, and
:meth:`Endpointer.force_end_of_turn` is a push-to-talk commit.

Example::

    ep = Endpointer(EndpointConfig(stop_s=0.6))
    for prob in probs:                       # one per 32 ms frame
        for ev in ep.step(prob):
            if isinstance(ev, EndOfTurn):
                start_reply(); ep.response_started()
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Literal

FRAME_S = 512 / 16000
"""Default frame duration: one Silero VAD window (512 samples at 16 kHz), 32 ms."""


@dataclass(frozen=True, kw_only=True)
class EndpointConfig:
    """Endpointing settings, in seconds and probabilities (see module docs).

    ``neg_threshold`` defaults to ``max(threshold - 0.15, 0.01)``, as in Silero.
    ``barge_in_s`` is how long speech must last while the assistant is
    responding before it interrupts; a shorter sound ("mm-hm", a cough) is
    ignored. ``loud_barge_in_s`` (None = off; used only when shorter) is the
    same for a run of frames that :meth:`Endpointer.step` got with
    ``loud=True``. ``prefix_padding_s`` is how much audio before the speech start a
    consumer (ASR, echo) should keep; see :meth:`Endpointer.padded_start`.
    ``eot_threshold`` and ``min_silence_s`` (capped at ``stop_s``) govern the
    external end-of-turn signal described in the module docs; a second, later
    tier (``late_eot_threshold``, None = off, after ``late_silence_s``) lets a
    less sure signal end the turn once the silence is longer than a pause.
    ``low_snr_neg_threshold`` (None = ``neg_threshold``) is where speech ends in
    frames stepped with ``low_snr=True``: in noise close to the speech level,
    Silero's probability falls slowly after the speech (0.9, 0.6, 0.5, ... over
    ~100 ms), so a higher bound finds the pause sooner.
    """

    start_s: float = 0.064
    stop_s: float = 0.5
    threshold: float = 0.5
    neg_threshold: float | None = None
    max_turn_s: float = 30.0
    barge_in_s: float = 0.096
    loud_barge_in_s: float | None = None
    prefix_padding_s: float = 0.3
    eot_threshold: float = 0.5
    min_silence_s: float = 0.1
    late_eot_threshold: float | None = None
    late_silence_s: float = 0.768
    low_snr_min_silence_s: float | None = None  # min_silence_s for frames stepped with low_snr=True
    low_snr_neg_threshold: float | None = None  # neg_threshold for frames stepped with low_snr=True

    @property
    def effective_neg_threshold(self) -> float:
        if self.neg_threshold is not None:
            return self.neg_threshold
        return max(self.threshold - 0.15, 0.01)

    def validate(self) -> EndpointConfig:
        """Raise ``ValueError`` naming the first bad setting; return ``self`` when valid."""
        for name in ("start_s", "stop_s", "max_turn_s", "barge_in_s", "min_silence_s",
                     "late_silence_s"):  # fmt: skip
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive finite number of seconds, got {v!r}")
        low = self.low_snr_min_silence_s
        if low is not None and not (math.isfinite(low) and low > 0):
            raise ValueError(f"low_snr_min_silence_s must be a positive number of seconds or None, got {low!r}")
        if not (math.isfinite(self.prefix_padding_s) and self.prefix_padding_s >= 0):
            raise ValueError(f"prefix_padding_s must be >= 0, got {self.prefix_padding_s!r}")
        if not (0.0 < self.threshold <= 1.0):
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold!r}")
        neg = self.effective_neg_threshold
        if not (0.0 < neg <= self.threshold):
            raise ValueError(f"neg_threshold must be in (0, threshold], got {neg!r}")
        low_neg = self.low_snr_neg_threshold
        if low_neg is not None and not (0.0 < low_neg <= self.threshold):
            raise ValueError(f"low_snr_neg_threshold must be in (0, threshold] or None, got {low_neg!r}")
        if not (0.0 < self.eot_threshold <= 1.0):
            raise ValueError(f"eot_threshold must be in (0, 1], got {self.eot_threshold!r}")
        loud = self.loud_barge_in_s
        if loud is not None and not (math.isfinite(loud) and loud > 0):
            raise ValueError(f"loud_barge_in_s must be a positive number of seconds or None, got {loud!r}")
        late = self.late_eot_threshold
        if late is not None and not (0.0 < late <= 1.0):
            raise ValueError(f"late_eot_threshold must be in (0, 1] or None, got {late!r}")
        if self.max_turn_s <= self.start_s:
            raise ValueError(f"max_turn_s ({self.max_turn_s}) must exceed start_s ({self.start_s})")
        return self

    def frames(self, frame_s: float = FRAME_S) -> EndpointFrames:
        """Convert to frame counts once, rounding durations up (never shorter than asked)."""
        self.validate()
        if not (math.isfinite(frame_s) and frame_s > 0):
            raise ValueError(f"frame_s must be positive, got {frame_s!r}")

        def n(seconds: float, minimum: int = 1) -> int:
            return max(minimum, math.ceil(seconds / frame_s - 1e-9))

        return EndpointFrames(
            start=n(self.start_s),
            stop=n(self.stop_s),
            max_turn=n(self.max_turn_s),
            barge_in=n(self.barge_in_s),
            loud_barge_in=None if self.loud_barge_in_s is None else n(self.loud_barge_in_s),
            prefix_padding=n(self.prefix_padding_s, 0),
            min_silence=min(n(self.min_silence_s), n(self.stop_s)),
            low_snr_min_silence=None if self.low_snr_min_silence_s is None
            else min(n(self.low_snr_min_silence_s), n(self.stop_s)),
            late_silence=min(n(self.late_silence_s), n(self.stop_s)),
            late_eot_threshold=self.late_eot_threshold,
            threshold=self.threshold,
            neg_threshold=self.effective_neg_threshold,
            low_snr_neg_threshold=self.low_snr_neg_threshold,
            eot_threshold=self.eot_threshold,
        )


@dataclass(frozen=True, kw_only=True)
class EndpointFrames:
    """:class:`EndpointConfig` resolved to whole frames for one frame duration."""

    start: int
    stop: int
    max_turn: int
    barge_in: int
    loud_barge_in: int | None
    prefix_padding: int
    min_silence: int
    low_snr_min_silence: int | None = None
    late_silence: int
    late_eot_threshold: float | None
    threshold: float
    neg_threshold: float
    low_snr_neg_threshold: float | None = None
    eot_threshold: float


class TurnPhase(enum.Enum):
    LISTENING = "listening"
    """No user speech in progress; waiting for speech (or for a reply to start)."""
    USER_SPEAKING = "user_speaking"
    """The user's turn: speech started and the turn has not ended (pauses included)."""
    RESPONDING = "responding"
    """The assistant is replying; speech lasting ``barge_in_s`` interrupts it."""


EndReason = Literal["silence", "external", "max_turn", "commit"]


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    frame: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    frame: int


@dataclass(frozen=True, slots=True)
class EndOfTurn:
    """The user's turn is over. ``reason``: ``"silence"`` (``stop_s`` hangover),
    ``"external"`` (``eot_prob`` confirmed by ``min_silence_s``), ``"max_turn"``
    or ``"commit"`` (:meth:`Endpointer.force_end_of_turn`)."""

    frame: int
    reason: EndReason
    speech_end: int


@dataclass(frozen=True, slots=True)
class BargeIn:
    frame: int


TurnEvent = SpeechStarted | SpeechStopped | EndOfTurn | BargeIn


class InvalidTransition(RuntimeError):
    """A response_* call that does not fit the current phase."""


class Endpointer:
    """Per-session turn-taking state (see module docs). Cheap; one per session."""

    def __init__(self, config: EndpointConfig | None = None, *, frame_s: float = FRAME_S) -> None:
        self.config = config or EndpointConfig()
        self.frame_s = frame_s
        self.counts = self.config.frames(frame_s)
        self.reset()

    def reset(self) -> None:
        """Back to LISTENING at frame 0, as for a new session."""
        self._phase = TurnPhase.LISTENING
        self._frame = 0  # frames processed so far = index of the next frame
        self._run_start = 0  # first frame of the current above-threshold run
        self._run_len = 0
        self._loud_len = 0  # frames at the end of that run that came with loud=True
        self._turn_start = 0
        self._speaking = False  # inside USER_SPEAKING: speech (True) or pause (False)
        self._silence_start = 0
        self._silence_len = 0

    @property
    def phase(self) -> TurnPhase:
        return self._phase

    @property
    def frame(self) -> int:
        """Frames processed so far; the current position on the audio timeline."""
        return self._frame

    def pause_ms_if(self, prob: float) -> float | None:
        """The silence inside the user's turn, in ms, that a next frame of ``prob`` would
        make (that frame included); None when that frame would not be silence in a user
        turn. Lets an end-of-turn model look at the pause before :meth:`step` reads it."""
        if self._phase is not TurnPhase.USER_SPEAKING:
            return None
        if self._speaking:
            frames = 1 if prob < self.counts.neg_threshold else 0
        else:
            frames = 0 if prob >= self.counts.threshold else self._silence_len + 1
        return frames * self.frame_s * 1000 if frames else None

    def padded_start(self, frame: int) -> int:
        """The frame from which to keep audio for speech starting at ``frame`` (prefix padding)."""
        return max(0, frame - self.counts.prefix_padding)

    def step(
        self, prob: float, eot_prob: float | None = None, *, loud: bool = False, low_snr: bool = False
    ) -> list[TurnEvent]:
        """Advance one frame with its speech probability; return the events it caused.

        ``eot_prob`` is an optional end-of-turn probability from an external
        model for the same moment (pass the latest value each frame, or
        ``None`` to rely on ``stop_s`` alone). ``loud`` marks a frame as
        clearly the user's voice (see ``loud_barge_in_s``). ``low_snr`` marks a
        frame heard in noise too close to the user's level for a level gate to find
        pauses: the silence then comes from the VAD's own probability, which already
        lags the speech, and ``low_snr_min_silence_s`` (when set) confirms the
        learned end of turn instead of ``min_silence_s``, and speech ends under
        ``low_snr_neg_threshold`` (when set) instead of ``neg_threshold``.
        """
        f = self.counts
        k = self._frame
        self._frame = k + 1
        events: list[TurnEvent] = []
        above = prob >= f.threshold

        # Runs of speech are tracked in every phase: they start turns and barge-ins.
        if above:
            if self._run_len == 0:
                self._run_start = k
            self._run_len += 1
            self._loud_len = self._loud_len + 1 if loud else 0
        else:
            self._run_len = 0
            self._loud_len = 0

        if self._phase is TurnPhase.USER_SPEAKING:
            min_silence = f.low_snr_min_silence if low_snr and f.low_snr_min_silence is not None else f.min_silence
            neg = f.low_snr_neg_threshold if low_snr and f.low_snr_neg_threshold is not None else f.neg_threshold
            if self._speaking:
                if prob < neg:
                    self._speaking = False
                    self._silence_start = k
                    self._silence_len = 1
            elif above:
                self._speaking = True  # the pause was shorter than the hangover
            else:
                self._silence_len += 1
            if not self._speaking:
                if eot_prob is not None and (
                    (eot_prob >= f.eot_threshold and self._silence_len >= min_silence)
                    or (
                        f.late_eot_threshold is not None
                        and eot_prob >= f.late_eot_threshold
                        and self._silence_len >= f.late_silence
                    )
                ):
                    self._end(events, "external")
                elif self._silence_len >= f.stop:
                    self._end(events, "silence")
            if (
                self._phase is TurnPhase.USER_SPEAKING
                and self._frame - self._turn_start >= f.max_turn
            ):
                self._end(events, "max_turn")
        else:
            responding = self._phase is TurnPhase.RESPONDING
            need = max(f.start, f.barge_in) if responding else f.start
            loud_ok = (
                responding
                and f.loud_barge_in is not None
                and self._loud_len >= max(f.start, f.loud_barge_in)
            )
            if self._run_len >= need or loud_ok:
                if responding:
                    events.append(BargeIn(self._run_start))
                events.append(SpeechStarted(self._run_start))
                self._phase = TurnPhase.USER_SPEAKING
                self._turn_start = self._run_start
                self._speaking = True
                self._silence_len = 0
        return events

    def _end(self, events: list[TurnEvent], reason: EndReason) -> None:
        speech_end = self._frame if self._speaking else self._silence_start
        events.append(SpeechStopped(speech_end))
        events.append(EndOfTurn(self._frame, reason, speech_end))
        self._phase = TurnPhase.LISTENING
        self._speaking = False
        self._silence_len = 0
        self._run_len = 0  # speech continuing after a forced end must start a new run
        self._loud_len = 0

    def force_end_of_turn(self) -> list[TurnEvent]:
        """Push-to-talk commit: end the user's turn now, at :attr:`frame`.

        In USER_SPEAKING this gives ``SpeechStopped`` and ``EndOfTurn(reason="commit")``.
        In LISTENING (the VAD heard nothing) it still gives ``EndOfTurn`` so
        the caller can commit its buffer. While RESPONDING it does nothing.
        """
        if self._phase is TurnPhase.RESPONDING:
            return []
        events: list[TurnEvent] = []
        if self._phase is TurnPhase.USER_SPEAKING:
            self._end(events, "commit")
        else:
            events.append(EndOfTurn(self._frame, "commit", self._frame))
            self._run_len = self._loud_len = 0
        return events

    def response_started(self) -> None:
        """The assistant began replying: enter RESPONDING (barge-in detection on).

        Valid only in LISTENING; raises :class:`InvalidTransition` while the
        user is speaking (cancel the pending reply instead) or already responding.
        """
        if self._phase is not TurnPhase.LISTENING:
            raise InvalidTransition(f"response_started() in phase {self._phase.name}")
        self._phase = TurnPhase.RESPONDING

    def response_finished(self) -> None:
        """The reply ended (played out or cancelled): back to LISTENING. No-op otherwise."""
        if self._phase is TurnPhase.RESPONDING:
            self._phase = TurnPhase.LISTENING
