"""One reply's audio as the client received it, and where it first becomes audible.

:class:`ReplyStream` keeps each reply-audio message with its receive time,
placed by the header's ``sample_offset``. :meth:`ReplyStream.onset` finds
``t_first_reply_audio`` as ../shared/LATENCY.md defines it: the receive time
of the reply audio that begins a stretch of at least 100 ms whose RMS is
above -35 dBFS. The stretch starts on a loud 10 ms window and at least half
of its 10 ms windows are loud, so a click or silent padding before the reply
does not count, while a word's stop closure ("two t|imes") does not push the
onset to a later word. Sans-I/O: the client feeds it, tests can too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ONSET_WINDOW_S = 0.100
ONSET_LEVEL_DBFS = -35.0
ONSET_HOP_S = 0.010
ONSET_MIN_LOUD = 0.5  # share of the stretch's 10 ms windows that must be loud


@dataclass(frozen=True)
class AudioChunk:
    offset: int  # first sample's position within the response
    pcm: np.ndarray = field(repr=False)  # float32 mono
    received_at: float


@dataclass(frozen=True)
class Onset:
    sample: int  # where the loud stretch begins, within the response
    received_at: float  # receive time of the message holding that sample


class ReplyStream:
    """Reply audio of one response. ``add`` each message, then read ``audio()`` / ``onset()``."""

    def __init__(self, response_id: int, sample_rate: int) -> None:
        self.response_id = response_id
        self.sample_rate = sample_rate
        self.chunks: list[AudioChunk] = []

    def add(self, offset: int, pcm: np.ndarray, received_at: float) -> None:
        self.chunks.append(AudioChunk(offset, pcm, received_at))

    @property
    def samples(self) -> int:
        """One past the last sample received."""
        return max((c.offset + len(c.pcm) for c in self.chunks), default=0)

    @property
    def first_audio_at(self) -> float | None:
        return self.chunks[0].received_at if self.chunks else None

    def audio(self) -> np.ndarray:
        """The reply as float32, each message at its offset (gaps are silence)."""
        out = np.zeros(self.samples, np.float32)
        for c in self.chunks:
            out[c.offset : c.offset + len(c.pcm)] = c.pcm
        return out

    def received_at(self, sample: int) -> float | None:
        """Receive time of the message holding ``sample`` (or, in a gap, the next one)."""
        later = [c for c in self.chunks if c.offset + len(c.pcm) > sample]
        if not later:
            return None
        return min(later, key=lambda c: (max(c.offset - sample, 0), c.received_at)).received_at

    def onset(
        self,
        *,
        window_s: float = ONSET_WINDOW_S,
        level_dbfs: float = ONSET_LEVEL_DBFS,
        hop_s: float = ONSET_HOP_S,
        min_loud: float = ONSET_MIN_LOUD,
    ) -> Onset | None:
        """Start of the first ``window_s`` stretch whose RMS is above ``level_dbfs``.

        The stretch begins on a ``hop_s`` window above the level, and at least
        ``min_loud`` of its windows are: a loud click of a few ms lifts a
        100 ms RMS above -35 dBFS on its own, and LATENCY.md says a click
        does not count. ``min_loud=1.0`` is the stricter rule used before
        2026-11-29 (every window loud), which timed "Two times six" from
        "six": the closures of /t/ and /k/ are quiet for 20-60 ms.
        """
        x = self.audio().astype(np.float64)
        hop = max(1, round(hop_s * self.sample_rate))
        need = max(1, round(window_s / hop_s))
        n = len(x) // hop
        if n < need:
            return None
        mean_sq = np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1)
        level = 10.0 ** (level_dbfs / 10.0)
        loud = (mean_sq > level).astype(np.int64)
        box = np.ones(need)
        n_loud = np.convolve(loud, box.astype(np.int64), mode="valid")  # loud windows in each stretch
        energy = np.convolve(mean_sq, box, mode="valid") / need  # mean square of each stretch
        ok = (loud[: len(n_loud)] == 1) & (energy > level) & (n_loud >= np.ceil(min_loud * need - 1e-9))
        hits = np.flatnonzero(ok)
        if len(hits) == 0:
            return None
        sample = int(hits[0]) * hop
        t = self.received_at(sample)
        assert t is not None, "a loud stretch lies inside received audio"
        return Onset(sample, t)
