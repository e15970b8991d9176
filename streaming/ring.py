"""Fixed-capacity ring buffer for mono PCM samples.

One ``RingBuffer`` sits between each stage that produces audio in one block
size and a stage that consumes it in another (20 ms network frames in,
512-sample VAD windows out). Storage is allocated once; ``write`` and
``read_into`` copy into and out of it without allocating, so a session in
steady state makes no garbage per frame.

The overflow policy is explicit because the two callers want different things:

``"drop_oldest"``
    A live stream that must never block: a write larger than ``free`` evicts the
    oldest samples (counted in the return value and in ``total_dropped``). A
    write larger than ``capacity`` keeps only its newest ``capacity`` samples.
``"reject"``
    A bounded queue: a write that does not fit raises :class:`RingBufferFull`
    and writes nothing, so the caller can shed load (or close the session)
    instead of silently losing audio.

Absolute positions: ``total_written`` counts every sample ever accepted, and
``read_position`` is the absolute index of the oldest buffered sample, so
``read_position + len(buf) == total_written`` always holds. These let a caller
place buffered audio on the session's timeline.

Example::

    ring = RingBuffer(16000, overflow="reject")  # 1 s at 16 kHz
    ring.write(frame)                            # 20 ms frames in
    window = np.empty(512, np.float32)
    while len(ring) >= 512:
        ring.read_into(window)                   # 32 ms windows out
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

OverflowPolicy = Literal["drop_oldest", "reject"]


class RingBufferFull(Exception):
    """A write did not fit and the buffer's policy is ``"reject"``; nothing was written."""


class RingBuffer:
    """Preallocated FIFO of samples with an explicit overflow policy (see module docs)."""

    __slots__ = (
        "_buf",
        "_capacity",
        "_start",
        "_len",
        "_overflow",
        "_written",
        "_read",
        "_dropped",
    )

    def __init__(
        self,
        capacity: int,
        *,
        dtype: npt.DTypeLike = np.float32,
        overflow: OverflowPolicy = "drop_oldest",
    ) -> None:
        if not isinstance(capacity, int | np.integer) or capacity <= 0:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        if overflow not in get_args(OverflowPolicy):
            raise ValueError(
                f"overflow must be one of {get_args(OverflowPolicy)}, got {overflow!r}"
            )
        self._capacity = int(capacity)
        self._buf: np.ndarray[Any, Any] = np.zeros(self._capacity, dtype=dtype)
        self._overflow: OverflowPolicy = overflow
        self._start = 0  # index in _buf of the oldest sample
        self._len = 0
        self._written = 0
        self._read = 0
        self._dropped = 0

    # -- sizes and counters ---------------------------------------------------
    def __len__(self) -> int:
        return self._len

    @property
    def capacity(self) -> int:
        """Maximum number of samples held."""
        return self._capacity

    @property
    def free(self) -> int:
        """Samples that can be written without overflow."""
        return self._capacity - self._len

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._buf.dtype

    @property
    def overflow(self) -> OverflowPolicy:
        return self._overflow

    @property
    def total_written(self) -> int:
        """Samples accepted by ``write`` since creation (including any later dropped)."""
        return self._written

    @property
    def total_read(self) -> int:
        """Samples consumed by ``read``, ``read_into`` and ``skip`` since creation."""
        return self._read

    @property
    def total_dropped(self) -> int:
        """Samples discarded unread, by ``drop_oldest`` overflow or by ``clear``."""
        return self._dropped

    @property
    def read_position(self) -> int:
        """Absolute index (in samples since creation) of the oldest buffered sample."""
        return self._written - self._len

    # -- writing ----------------------------------------------------------------
    def write(self, x: np.ndarray) -> int:
        """Append the 1-D array ``x``; return how many samples were dropped to make room.

        Always 0 under ``"reject"``, which raises :class:`RingBufferFull` instead
        (and writes nothing) when ``len(x) > free``. Values are cast to the
        buffer's dtype in place; no memory is allocated.
        """
        if x.ndim != 1:
            raise ValueError(f"expected a 1-D array, got shape {x.shape}")
        n = x.shape[0]
        if n == 0:
            return 0
        cap = self._capacity
        dropped = 0
        if n > cap - self._len:
            if self._overflow == "reject":
                raise RingBufferFull(
                    f"write of {n} samples does not fit: {self.free} free of {cap}"
                )
            dropped = self._len + n - cap
            evict = min(dropped, self._len)  # buffered samples to evict
            self._start = (self._start + evict) % cap
            self._len -= evict
            if n > cap:  # the write itself overflows: keep its newest `cap` samples
                x = x[n - cap :]
                # the skipped input samples are dropped too; the buffer is now empty
            self._dropped += dropped
        m = x.shape[0]
        end = (self._start + self._len) % cap
        first = min(m, cap - end)
        self._buf[end : end + first] = x[:first]
        if first < m:
            self._buf[: m - first] = x[first:]
        self._len += m
        self._written += n
        return dropped

    # -- reading ----------------------------------------------------------------
    def _copy_out(self, out: np.ndarray, n: int) -> None:
        """Copy the oldest ``n`` buffered samples into ``out[:n]`` without consuming."""
        first = min(n, self._capacity - self._start)
        out[:first] = self._buf[self._start : self._start + first]
        if first < n:
            out[first:n] = self._buf[: n - first]

    def _consume(self, n: int) -> None:
        self._start = (self._start + n) % self._capacity
        self._len -= n
        if self._len == 0:
            self._start = 0  # keep reads contiguous when possible

    def read_into(self, out: np.ndarray) -> int:
        """Move up to ``len(out)`` oldest samples into ``out``; return the count moved.

        The allocation-free read: reuse one ``out`` array per session. Samples
        of ``out`` past the returned count are left untouched.
        """
        if out.ndim != 1:
            raise ValueError(f"expected a 1-D output array, got shape {out.shape}")
        n = min(out.shape[0], self._len)
        if n:
            self._copy_out(out, n)
            self._consume(n)
            self._read += n
        return n

    def read(self, n: int) -> np.ndarray:
        """Remove and return up to ``n`` oldest samples as a new array (allocates)."""
        out = self.peek(n)
        self._consume(out.shape[0])
        self._read += out.shape[0]
        return out

    def peek(self, n: int) -> np.ndarray:
        """Return a copy of up to ``n`` oldest samples without consuming them."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        k = min(n, self._len)
        out = np.empty(k, dtype=self._buf.dtype)
        if k:
            self._copy_out(out, k)
        return out

    def skip(self, n: int) -> int:
        """Discard up to ``n`` oldest samples (counted as read); return the count skipped."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        k = min(n, self._len)
        if k:
            self._consume(k)
            self._read += k
        return k

    def clear(self) -> None:
        """Discard everything buffered (counted in ``total_dropped``); positions continue."""
        self._dropped += self._len
        self._len = 0
        self._start = 0

    def __repr__(self) -> str:
        return (
            f"RingBuffer(len={self._len}, capacity={self._capacity}, "
            f"dtype={self._buf.dtype}, overflow={self._overflow!r})"
        )
