"""A simulated loudspeaker: the playout model of ../shared/LATENCY.md ("Playout").

Sans-I/O and clock-free: every call takes ``now`` (seconds on any monotonic
clock, the client uses ``time.perf_counter``), so tests can script it::

    spk = Loudspeaker(24000)
    spk.push(rid, n_samples, now)   # each accepted reply-audio message
    spk.advance(now)                # any time; the client ticks it every ~100 ms
    spk.played_ms(rid)              # what to report in ``playback.position``
    spk.flush(now)                  # on ``interrupted``: drop the buffer at once
    spk.finish(rid, now)            # on ``response.done``: running dry is the end

Rules: playout of a response starts when its first audio arrives plus the
jitter allowance (40 ms), then plays at real-time rate. When the buffer runs
dry before the response is finished it waits for more (an underrun, recorded
with its duration) instead of skipping ahead. One response plays at a time;
audio of a new response ends the previous one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

JITTER_S = 0.040


@dataclass
class Playout:
    """What the loudspeaker did with one response (times on the caller's clock)."""

    response_id: int
    first_audio_at: float
    start_at: float  # first_audio_at + jitter allowance
    received: int = 0  # samples
    played: float = 0.0  # samples, fractional between ticks
    clock: float = 0.0  # time of the last update
    finished: bool = False  # response.done seen: no more audio will come
    dry_since: float | None = None
    underruns: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds)
    silent_at: float | None = None  # when it stopped sounding: drained, flushed or replaced
    end_reason: str | None = None  # "drained", "flushed" or "replaced"
    dropped: int = 0  # samples discarded by a flush

    @property
    def ended(self) -> bool:
        return self.silent_at is not None

    @property
    def buffered(self) -> float:
        return self.received - self.played


class Loudspeaker:
    """Plays reply audio at ``rate`` in real time; see the module docstring for the protocol."""

    def __init__(self, rate: int, *, jitter_s: float = JITTER_S) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = rate
        self.jitter_s = jitter_s
        self.current: Playout | None = None
        self.history: dict[int, Playout] = {}

    # -- inputs ----------------------------------------------------------------
    def push(self, response_id: int, samples: int, now: float) -> None:
        """Queue ``samples`` of reply audio of ``response_id`` received at ``now``."""
        p = self.current
        if p is None or p.response_id != response_id:
            if p is not None and not p.ended:
                self.advance(now)
                self._end(p, now, "replaced")
            p = self.history.get(response_id)
            if p is not None:  # audio for a reply that already ended: nothing to play
                return
            p = Playout(response_id, first_audio_at=now, start_at=now + self.jitter_s, clock=now)
            self.current = self.history[response_id] = p
        else:
            self.advance(now)
            if p.ended:
                return
            if p.dry_since is not None:
                p.underruns.append((p.dry_since, now - p.dry_since))
                p.dry_since = None
        p.received += samples

    def advance(self, now: float) -> None:
        """Play what real time allows up to ``now``."""
        p = self.current
        if p is None or p.ended or now <= p.clock:
            return
        t = max(p.clock, p.start_at)
        if now > t:
            avail = p.buffered
            can = (now - t) * self.rate
            if can >= avail:
                p.played = float(p.received)
                if p.dry_since is None:
                    p.dry_since = t + avail / self.rate
                if p.finished:
                    self._end(p, p.dry_since, "drained")
            else:
                p.played += can
        p.clock = now

    def finish(self, response_id: int, now: float) -> None:
        """The server finished ``response_id`` (``response.done``): no more audio comes."""
        p = self.history.get(response_id)
        if p is None or p.ended:
            return
        self.advance(now)
        p.finished = True
        if p.dry_since is not None:
            self._end(p, p.dry_since, "drained")

    def flush(self, now: float, response_id: int | None = None) -> None:
        """Drop the buffer now (``interrupted``); ``response_id`` None means whatever plays."""
        p = self.current
        if p is None or p.ended or (response_id is not None and p.response_id != response_id):
            return
        self.advance(now)
        if p.ended:  # it had drained before the interruption arrived
            return
        p.dropped = int(round(p.buffered))
        p.received = int(p.played)
        p.played = float(p.received)
        self._end(p, now, "flushed")

    # -- queries ---------------------------------------------------------------
    def played_ms(self, response_id: int) -> float:
        p = self.history.get(response_id)
        return 0.0 if p is None else p.played * 1000.0 / self.rate

    def playout(self, response_id: int) -> Playout | None:
        return self.history.get(response_id)

    def is_sounding(self, now: float) -> bool:
        """True while audio is coming out (started, not ended, not in an underrun)."""
        self.advance(now)
        p = self.current
        return p is not None and not p.ended and now >= p.start_at and p.dry_since is None

    @staticmethod
    def _end(p: Playout, at: float, reason: str) -> None:
        # An underrun in progress when the reply ends means it fell silent back then.
        p.silent_at = p.dry_since if p.dry_since is not None else at
        p.end_reason = reason
