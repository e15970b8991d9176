"""Output pacing: send reply audio at most ``lead_s`` ahead of the client's playout.

Sending a whole reply in one burst makes barge-in slow: the client already
holds seconds of audio when the user interrupts. The :class:`Pacer` keeps an
estimate of what the client has played and releases fixed-size chunks only
while the client's buffer stays within ``lead_s``, so an interruption costs
at most ``lead_s`` of stale audio, and a flush stops everything still queued.

The client model follows docs (LATENCY.md "Playout"): it plays received
audio at real-time rate from :meth:`Pacer.start`, and when it runs dry it
waits for more (an underrun) rather than skipping ahead. So the estimate is
``played <= sent`` at all times, and the invariant the pacer keeps is::

    sent_samples <= played_samples + lead_samples  (<= elapsed * rate + lead_samples)

Time is injected (``now``: monotonic seconds), so the pacer is pure and an
async sender is a thin loop::

    pacer = Pacer(24000)
    pacer.start(loop.time())
    while not pacer.done:
        for chunk in pacer.due(loop.time()):
            await ws.send(frame(chunk))
        wake = pacer.next_due_time(loop.time())
        await wait_for_more_audio_or(wake)   # None: wait for push()/finish()
"""

from __future__ import annotations

import collections
import math
from typing import Any

import numpy as np
import numpy.typing as npt

_EPS = 1e-6  # samples; absorbs float error in the playout estimate


class Pacer:
    """Releases queued reply audio in ``chunk_s`` chunks, at most ``lead_s`` ahead.

    ``push`` reply audio as it is produced, call :meth:`finish` when the reply
    is complete, and send what :meth:`due` returns. Chunks are exactly
    ``chunk_samples`` long except the last one after ``finish``; a partial
    chunk waits for more audio. ``dtype`` is the sample type chunks come out in.
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        lead_s: float = 0.12,
        chunk_s: float = 0.02,
        dtype: npt.DTypeLike = np.float32,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if not (math.isfinite(chunk_s) and chunk_s > 0):
            raise ValueError(f"chunk_s must be positive, got {chunk_s}")
        if not (math.isfinite(lead_s) and lead_s >= chunk_s):
            raise ValueError(f"lead_s ({lead_s}) must be at least chunk_s ({chunk_s})")
        self.sample_rate = sample_rate
        self.chunk_samples = max(1, round(chunk_s * sample_rate))
        self.lead_samples = round(lead_s * sample_rate)
        if self.lead_samples < self.chunk_samples:
            raise ValueError("lead_s rounds to fewer samples than one chunk")
        self.dtype: np.dtype[Any] = np.dtype(dtype)
        self._queue: collections.deque[np.ndarray] = collections.deque()
        self._head_offset = 0  # samples of _queue[0] already sent
        self._queued = 0
        self._sent = 0
        self._played = 0.0  # estimated samples the client has played
        self._clock: float | None = None  # time of the last playout update
        self._finished = False

    # -- state ------------------------------------------------------------------
    @property
    def sent_samples(self) -> int:
        """Samples released by :meth:`due` so far."""
        return self._sent

    @property
    def queued_samples(self) -> int:
        """Samples pushed but not yet released."""
        return self._queued

    @property
    def started(self) -> bool:
        return self._clock is not None

    @property
    def finished(self) -> bool:
        """True after :meth:`finish` or :meth:`flush`: no more audio will be pushed."""
        return self._finished

    @property
    def done(self) -> bool:
        """Finished and everything queued has been released."""
        return self._finished and self._queued == 0

    def played_samples(self, now: float) -> float:
        """Estimated samples the client has played by ``now`` (never more than sent)."""
        self._advance(now)
        return self._played

    # -- input ------------------------------------------------------------------
    def push(self, samples: npt.ArrayLike) -> None:
        """Queue reply audio (1-D). Raises ``RuntimeError`` after :meth:`finish` or :meth:`flush`."""
        if self._finished:
            raise RuntimeError("push() after finish() or flush()")
        a = np.array(samples, dtype=self.dtype, copy=True)
        if a.ndim != 1:
            raise ValueError(f"expected 1-D samples, got shape {a.shape}")
        if a.shape[0]:
            self._queue.append(a)
            self._queued += a.shape[0]

    def finish(self) -> None:
        """No more audio will be pushed: the last partial chunk may now be released."""
        self._finished = True

    def flush(self) -> int:
        """Drop everything queued (interruption) and finish; return the samples dropped.

        The client is assumed to drop its own buffer too, so the playout
        estimate jumps to what was sent.
        """
        dropped = self._queued
        self._queue.clear()
        self._head_offset = 0
        self._queued = 0
        self._played = float(self._sent)
        self._finished = True
        return dropped

    # -- output ------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Mark the start of playout. Optional: the first :meth:`due` starts it otherwise."""
        if self._clock is None:
            self._clock = now

    def _advance(self, now: float) -> None:
        if self._clock is None:
            self._clock = now
            return
        if now < self._clock:
            raise ValueError(f"time went backwards: {now} < {self._clock}")
        # The client plays at real-time rate while it has audio, and waits when dry.
        self._played = min(float(self._sent), self._played + (now - self._clock) * self.sample_rate)
        self._clock = now

    def _next_size(self) -> int:
        """Size of the next chunk to release, or 0 when none is ready."""
        if self._queued >= self.chunk_samples:
            return self.chunk_samples
        if self._finished and self._queued > 0:
            return self._queued
        return 0

    def _room(self) -> float:
        """Samples that may go out now without exceeding the lead."""
        return self._played + self.lead_samples - self._sent

    def due(self, now: float) -> list[np.ndarray]:
        """Return the chunks that may be sent at ``now`` (possibly none), in order.

        The first call after start releases up to ``lead_s`` at once; later calls
        release what real-time playout has made room for.
        """
        self._advance(now)
        out: list[np.ndarray] = []
        while True:
            size = self._next_size()
            if size == 0 or size > self._room() + _EPS:
                return out
            out.append(self._take(size))
            self._sent += size

    def next_due_time(self, now: float) -> float | None:
        """When the next chunk may be sent: ``now`` if already due, a later time, or
        ``None`` when nothing is ready (waiting for ``push``/``finish``, or done)."""
        self._advance(now)
        size = self._next_size()
        if size == 0:
            return None
        deficit = size - self._room()  # due() tolerates _EPS, so waking here always sends
        if deficit <= _EPS:
            return now
        # deficit <= sent - played (lead >= chunk), so playout alone will make room.
        return now + deficit / self.sample_rate

    def _take(self, n: int) -> np.ndarray:
        head = self._queue[0]
        avail = head.shape[0] - self._head_offset
        if avail >= n:  # the common case: a view of one pushed block
            chunk = head[self._head_offset : self._head_offset + n]
            self._head_offset += n
            if self._head_offset == head.shape[0]:
                self._queue.popleft()
                self._head_offset = 0
        else:
            chunk = np.empty(n, dtype=self.dtype)
            filled = 0
            while filled < n:
                head = self._queue[0]
                k = min(n - filled, head.shape[0] - self._head_offset)
                chunk[filled : filled + k] = head[self._head_offset : self._head_offset + k]
                filled += k
                self._head_offset += k
                if self._head_offset == head.shape[0]:
                    self._queue.popleft()
                    self._head_offset = 0
        self._queued -= n
        return chunk
