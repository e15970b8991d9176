"""Signal-level refinement of VAD speech boundaries.

Silero's probability stays high for one to four 32 ms windows after speech
energy has gone, so a VAD-only speech end is late by up to ~120 ms. Once the
turn has ended we also hold the silence that followed it, so the boundary can
be moved to the last 10 ms window that is clearly louder than that silence
(and than -40 dBFS, the level LATENCY.md uses for ground truth).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

MIN_DBFS = -40.0


def window_levels_db(audio: np.ndarray, win: int) -> np.ndarray:
    n = len(audio) // win
    if n == 0:
        return np.zeros(0)
    frames = audio[: n * win].astype(np.float64).reshape(n, win)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def refine_speech_end(
    audio: np.ndarray,
    coarse_end: int,
    rate: int,
    *,
    search_s: float = 0.25,
    margin_db: float = 10.0,
    min_dbfs: float = MIN_DBFS,
) -> int:
    """Move a VAD speech end (sample index into ``audio``) back to where the level drops.

    The noise floor is the 20th percentile of 10 ms levels after
    ``coarse_end``; the new end is the end of the last window within
    ``search_s`` before ``coarse_end`` above ``max(min_dbfs, floor + margin_db)``.
    Returns ``coarse_end`` unchanged when nothing qualifies.
    """
    win = max(1, rate // 100)
    lo = max(0, coarse_end - int(search_s * rate))
    lo -= lo % win
    tail = window_levels_db(audio[coarse_end:], win)
    floor = float(np.percentile(tail, 20)) if len(tail) else -120.0
    threshold = max(min_dbfs, floor + margin_db)
    levels = window_levels_db(audio[lo:coarse_end], win)
    loud = np.flatnonzero(levels > threshold)
    if len(loud) == 0:
        return coarse_end
    return lo + int(loud[-1] + 1) * win


def first_audible(pcm: np.ndarray, rate: int, *, level_dbfs: float = -50.0, keep_s: float = 0.01) -> int | None:
    """Index from which ``pcm`` should be played so it starts with sound, not padding.

    The start of the first 10 ms window above ``level_dbfs``, minus ``keep_s``
    of lead-in; None when no window is that loud.
    """
    win = max(1, rate // 100)
    loud = np.flatnonzero(window_levels_db(pcm, win) > level_dbfs)
    if len(loud) == 0:
        return None
    return max(0, int(loud[0]) * win - int(keep_s * rate))


class QuietGate:
    """Counts a VAD window as silence as soon as its level is back at the background.

    Silero's probability stays high for a median ~100 ms after speech energy has
    gone, so a pause (or the end of a turn) starts that late. Inside a user turn,
    a window whose VAD probability is below ``below`` and whose level is both near
    the background (under ``max(background, floor_dbfs) + margin_db``) and far
    below the speech (under ``speech - depth_db``) is passed on as probability 0.
    ``background`` is the 20th percentile of the levels of recent windows heard
    outside a turn with probability under ``background_prob``; ``speech`` the 80th
    percentile of recent windows at or above ``speech_prob``. In loud noise (SNR
    under about ``depth_db``) nothing is quiet enough and the gate stays shut, unless
    ``low_snr_margin_db`` is set: then a window within that many dB of the background
    is quiet however close the speech is (quiet level ``max(speech - depth_db,
    background + low_snr_margin_db)``, still capped at ``background + margin_db``).
    Until both levels are known the gate passes every probability through
    unchanged, and it never raises one.
    """

    def __init__(self, below: float, *, margin_db: float = 6.0, depth_db: float = 30.0,
                 floor_dbfs: float = -70.0, history: int = 60, background_prob: float = 0.35,
                 speech_prob: float = 0.5, low_snr_margin_db: float | None = None) -> None:  # fmt: skip
        if not 0.0 <= below <= 1.0:
            raise ValueError(f"below must be in [0, 1], got {below!r}")
        if not 0.0 < depth_db <= 60.0:
            raise ValueError(f"depth_db must be in (0, 60], got {depth_db!r}")
        if low_snr_margin_db is not None and not 0.0 <= low_snr_margin_db <= margin_db:
            raise ValueError(f"low_snr_margin_db must be in [0, margin_db], got {low_snr_margin_db!r}")
        self.below = below
        self.low_snr_margin_db = low_snr_margin_db
        self.margin_db, self.depth_db, self.floor_dbfs = margin_db, depth_db, floor_dbfs
        self.background_prob, self.speech_prob = background_prob, speech_prob
        self._background: deque[float] = deque(maxlen=history)
        self._speech: deque[float] = deque(maxlen=history)
        self.last_level = -math.inf  # level of the last window given to gate(), dBFS

    def _background_level(self) -> float | None:
        return max(float(np.percentile(self._background, 20)), self.floor_dbfs) if self._background else None

    def quiet_level(self) -> float | None:
        """The level under which a window in a turn is quiet; None until it is known."""
        sp, bg = self.speech_level(), self._background_level()
        if bg is None or sp is None:
            return None
        deep = sp - self.depth_db
        if self.low_snr_margin_db is not None:
            deep = max(deep, bg + self.low_snr_margin_db)
        return min(bg + self.margin_db, deep)

    def headroom_db(self) -> float | None:
        """How far the quiet level sits above the background (dB); None until both are known.

        Near 0 (or below) the gate can hardly open: the user's speech is less than about
        ``depth_db`` over the noise, so pauses are found by the VAD's own probability."""
        quiet, bg = self.quiet_level(), self._background_level()
        return None if quiet is None or bg is None else quiet - bg

    def speech_level(self) -> float | None:
        """The speech level (dBFS) the gate compares against; None until speech was heard."""
        return float(np.percentile(self._speech, 80)) if self._speech else None

    def near_speech(self, within_db: float) -> bool:
        """Whether the last window was within ``within_db`` of the speech level: clearly a
        voice as loud as the user's, not a faint echo of the reply."""
        sp = self.speech_level()
        return sp is not None and self.last_level >= sp - within_db

    def gate(self, prob: float, window: np.ndarray, in_turn: bool) -> float:
        """The probability to give the endpointer for this window (0 when gated)."""
        level = float(window_levels_db(window, len(window))[0])
        self.last_level = level
        out = prob
        if in_turn and prob < self.below:
            quiet = self.quiet_level()
            if quiet is not None and level < quiet:
                out = 0.0
        if prob < self.background_prob and not in_turn:
            self._background.append(level)
        if prob >= self.speech_prob:
            self._speech.append(level)
        return out
