"""RingBuffer against a plain Python-list model, plus the no-allocation promise."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from streaming.ring import RingBuffer, RingBufferFull


class RingModel(RuleBasedStateMachine):
    """Every operation is applied to the RingBuffer and to a list; results must agree."""

    def __init__(self) -> None:
        super().__init__()
        self.ring: RingBuffer
        self.model: list[int] = []
        self.written = 0
        self.read = 0
        self.dropped = 0

    @initialize(capacity=st.integers(1, 24), overflow=st.sampled_from(["drop_oldest", "reject"]))
    def make(self, capacity: int, overflow: str) -> None:
        self.ring = RingBuffer(capacity, dtype=np.int64, overflow=overflow)  # type: ignore[arg-type]
        self.capacity = capacity
        self.overflow = overflow

    def _fresh(self, n: int) -> np.ndarray:
        # each value is its absolute stream position (rejected writes take no positions)
        return np.arange(self.written, self.written + n, dtype=np.int64)

    @rule(n=st.integers(0, 40))
    def write(self, n: int) -> None:
        x = self._fresh(n)
        if self.overflow == "reject" and len(self.model) + n > self.capacity:
            before = self.ring.peek(self.capacity).tolist()
            with pytest.raises(RingBufferFull):
                self.ring.write(x)
            assert self.ring.peek(self.capacity).tolist() == before  # nothing written
            return
        dropped = self.ring.write(x)
        self.model.extend(x.tolist())
        expect_drop = max(0, len(self.model) - self.capacity)
        del self.model[:expect_drop]
        assert dropped == expect_drop
        self.written += n
        self.dropped += expect_drop

    @rule(n=st.integers(0, 30))
    def read_(self, n: int) -> None:
        got = self.ring.read(n)
        k = min(n, len(self.model))
        assert got.tolist() == self.model[:k]
        del self.model[:k]
        self.read += k

    @rule(n=st.integers(0, 30))
    def read_into(self, n: int) -> None:
        out = np.full(n, -1, dtype=np.int64)
        k = self.ring.read_into(out)
        assert k == min(n, len(self.model))
        assert out[:k].tolist() == self.model[:k]
        assert (out[k:] == -1).all()  # untouched beyond the count
        del self.model[:k]
        self.read += k

    @rule(n=st.integers(0, 30))
    def peek(self, n: int) -> None:
        assert self.ring.peek(n).tolist() == self.model[:n]

    @rule(n=st.integers(0, 30))
    def skip(self, n: int) -> None:
        k = self.ring.skip(n)
        assert k == min(n, len(self.model))
        del self.model[:k]
        self.read += k

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def clear(self) -> None:
        self.ring.clear()
        self.dropped += len(self.model)
        self.model.clear()

    @invariant()
    def counters_agree(self) -> None:
        if not hasattr(self, "ring"):
            return
        assert len(self.ring) == len(self.model)
        assert self.ring.free == self.capacity - len(self.model)
        assert self.ring.total_written == self.written
        assert self.ring.total_read == self.read
        assert self.ring.total_dropped == self.dropped
        assert self.ring.read_position + len(self.ring) == self.ring.total_written
        if self.model:  # values are their own absolute positions
            assert self.ring.read_position == self.model[0]


RingModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestRingModel = RingModel.TestCase


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 64),
    chunks=st.lists(st.integers(0, 100), max_size=12),
)
def test_drop_oldest_keeps_newest_samples(capacity: int, chunks: list[int]) -> None:
    ring = RingBuffer(capacity, dtype=np.float32)
    stream: list[float] = []
    for n in chunks:
        x = np.arange(len(stream), len(stream) + n, dtype=np.float32)
        ring.write(x)
        stream.extend(x.tolist())
    assert ring.peek(capacity).tolist() == stream[-capacity:] if stream else len(ring) == 0


def test_write_and_read_into_do_not_allocate_in_steady_state() -> None:
    frame = np.ones(4096, dtype=np.float32)
    out = np.empty(4096, dtype=np.float32)
    ring = RingBuffer(3 * 4096 + 100, dtype=np.float32)
    for _ in range(4):  # warm up; wrap around at least once
        ring.write(frame)
        ring.read_into(out)
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(50):
            ring.write(frame)
            ring.read_into(out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One frame is 16 KiB; a per-call copy would show up as at least that.
    assert peak - base < 2048


def test_write_casts_and_validates() -> None:
    ring = RingBuffer(8, dtype=np.float32)
    ring.write(np.array([1, 2, 3], dtype=np.int16))
    assert ring.read(3).dtype == np.float32
    with pytest.raises(ValueError):
        ring.write(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError):
        ring.read(-1)
    with pytest.raises(ValueError):
        RingBuffer(0)
    with pytest.raises(ValueError):
        RingBuffer(4, overflow="block")  # type: ignore[arg-type]


def test_reject_raises_and_writes_nothing() -> None:
    ring = RingBuffer(4, overflow="reject")
    ring.write(np.array([1.0, 2.0, 3.0], dtype=np.float32))
    with pytest.raises(RingBufferFull):
        ring.write(np.array([4.0, 5.0], dtype=np.float32))
    assert ring.peek(4).tolist() == [1.0, 2.0, 3.0]
    assert ring.total_written == 3
