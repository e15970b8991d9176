"""A dependency-free progress bar on stderr (test-set synthesis and the run itself)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``bar = ProgressBar(total, "synth"); bar.update(1, note); bar.close()``.

    Redraws at most every 0.2 s on a terminal; elsewhere (CI logs, pipes) it
    prints one line per 10 % so logs stay short. ``enabled=False`` is silent.
    """

    def __init__(self, total: int, label: str, *, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = max(0, total)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.done = 0
        self.note = ""
        self.t0 = time.perf_counter()
        self._last_draw = 0.0
        self._last_decile = -1
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if note:
            self.note = note
        self._draw()

    def add_total(self, n: int) -> None:
        self.total += n
        self._draw()

    def _draw(self, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        frac = self.done / self.total if self.total else 1.0
        elapsed = now - self.t0
        eta = elapsed / frac - elapsed if 0 < frac < 1 else 0.0
        width = 24
        filled = min(width, int(frac * width))
        line = (
            f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
            f"{elapsed:5.0f}s elapsed, ~{eta:.0f}s left {self.note}"
        )
        if self._tty:
            if final or now - self._last_draw >= 0.2:
                self.stream.write("\r" + line[:150].ljust(150))
                self.stream.flush()
                self._last_draw = now
            return
        decile = int(frac * 10)
        if final or decile > self._last_decile:
            self._last_decile = decile
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        self._draw(final=True)
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()
