"""PCM16 <-> float32 conversion and chunk-size-independent streaming resampling.

Audio crosses the wire as PCM16LE mono and lives inside the server as float32
in [-1, 1). Clients may send or want any of :data:`SUPPORTED_RATES`; the VAD
and models run at fixed rates, so each session keeps one
:class:`StreamResampler` per direction. Resampling is python-soxr's streaming
API (libsoxr), never a hand-written filter: its output does not depend on how
the input is chunked, which the tests check.

Example::

    up = StreamResampler(48000, 16000)
    for payload in frames:                    # PCM16LE bytes from the client
        x16k = up.process(pcm16_to_float32(payload))
    tail = up.flush()                          # end of stream
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import soxr

SUPPORTED_RATES: tuple[int, ...] = (8000, 16000, 22050, 24000, 44100, 48000)

_PCM16_SCALE = 32768.0


def pcm16_to_float32(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode PCM16 little-endian mono bytes into float32 samples in [-1, 1).

    Raises ``ValueError`` when the byte count is odd (a torn sample).
    """
    if len(data) % 2:
        raise ValueError(f"PCM16 payload has odd length {len(data)}")
    pcm = np.frombuffer(data, dtype="<i2")
    out = pcm.astype(np.float32)
    out *= np.float32(1.0 / _PCM16_SCALE)
    return out


def float32_to_pcm16(x: npt.ArrayLike) -> bytes:
    """Encode float samples as PCM16 little-endian bytes, rounding and clipping to range.

    Values outside [-1, 1) saturate instead of wrapping; NaN becomes 0.
    ``pcm16_to_float32(float32_to_pcm16(x))`` is exact for PCM16-valued input.
    """
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"expected 1-D mono samples, got shape {a.shape}")
    scaled = np.nan_to_num(a * np.float32(_PCM16_SCALE), nan=0.0)
    np.rint(scaled, out=scaled)
    np.clip(scaled, -32768.0, 32767.0, out=scaled)
    return scaled.astype("<i2").tobytes()


class UnsupportedRate(ValueError):
    """A sample rate outside :data:`SUPPORTED_RATES`."""


def check_rate(rate: int) -> int:
    """Return ``rate`` if it is one of :data:`SUPPORTED_RATES`, else raise :class:`UnsupportedRate`."""
    if (
        isinstance(rate, bool)
        or not isinstance(rate, int | np.integer)
        or rate not in SUPPORTED_RATES
    ):
        raise UnsupportedRate(f"unsupported sample rate {rate!r}; supported: {SUPPORTED_RATES}")
    return int(rate)


class StreamResampler:
    """Resample one mono float32 stream from ``in_rate`` to ``out_rate`` in pieces.

    Call :meth:`process` with each chunk as it arrives (any size, including
    empty) and :meth:`flush` once at the end of the stream to drain the
    filter's delay line. Joined outputs equal one whole-signal pass, and after
    ``flush`` their length is ``round(n_in * out_rate / in_rate)`` (libsoxr's
    rounding). ``flush`` also rearms the resampler for a new stream.

    When the rates are equal, ``process`` returns a float32 copy of its input
    and nothing is buffered. Not thread-safe: one instance per stream.
    """

    def __init__(self, in_rate: int, out_rate: int, *, quality: str = "HQ") -> None:
        self.in_rate = check_rate(in_rate)
        self.out_rate = check_rate(out_rate)
        self.quality = quality
        self._stream: soxr.ResampleStream | None = None
        if self.in_rate != self.out_rate:
            self._stream = self._new_stream()
        self.samples_in = 0
        self.samples_out = 0

    def _new_stream(self) -> soxr.ResampleStream:
        return soxr.ResampleStream(
            self.in_rate, self.out_rate, 1, dtype="float32", quality=self.quality
        )

    @property
    def identity(self) -> bool:
        """True when input and output rates are equal (no filtering)."""
        return self._stream is None

    @staticmethod
    def _check(x: npt.ArrayLike) -> np.ndarray[Any, np.dtype[np.float32]]:
        a = np.ascontiguousarray(x, dtype=np.float32)
        if a.ndim != 1:
            raise ValueError(f"expected 1-D mono samples, got shape {a.shape}")
        return a

    def process(self, x: npt.ArrayLike) -> np.ndarray:
        """Feed one chunk; return whatever output samples are ready (possibly none)."""
        a = self._check(x)
        self.samples_in += a.shape[0]
        if self._stream is None:
            out = a.copy() if a is x else a
        else:
            out = self._stream.resample_chunk(a, last=False)
        self.samples_out += out.shape[0]
        return out

    def flush(self) -> np.ndarray:
        """End the stream: return the remaining output and reset for a new stream."""
        if self._stream is None:
            out = np.zeros(0, dtype=np.float32)
        else:
            out = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            self._stream = self._new_stream()
        self.samples_out += out.shape[0]
        return out

    def reset(self) -> None:
        """Drop any buffered input and start a new stream (counters restart)."""
        if self._stream is not None:
            self._stream = self._new_stream()
        self.samples_in = 0
        self.samples_out = 0


def resample(x: npt.ArrayLike, in_rate: int, out_rate: int, *, quality: str = "HQ") -> np.ndarray:
    """Resample a whole mono signal at once (same filter as :class:`StreamResampler`)."""
    r = StreamResampler(in_rate, out_rate, quality=quality)
    head = r.process(x)
    return np.concatenate([head, r.flush()])
