"""Pacer: never ahead of playout + lead, sends everything, flushes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.pacer import Pacer

RATE = 16000
LEAD = int(0.12 * RATE)
CHUNK = int(0.02 * RATE)


class Loudspeaker:
    """An independent client model: plays at real-time rate from t0, stalls when dry."""

    def __init__(self, t0: float) -> None:
        self.t = t0
        self.buffered = 0.0
        self.received = 0

    def advance(self, now: float) -> None:
        self.buffered = max(0.0, self.buffered - (now - self.t) * RATE)
        self.t = now

    def receive(self, chunks: list[np.ndarray]) -> None:
        for c in chunks:
            self.buffered += len(c)
            self.received += len(c)


def test_first_call_sends_the_lead_then_real_time() -> None:
    p = Pacer(RATE)
    p.push(np.zeros(RATE, np.float32))
    p.start(10.0)
    first = p.due(10.0)
    assert [len(c) for c in first] == [CHUNK] * (LEAD // CHUNK)
    assert p.due(10.0) == []
    assert p.next_due_time(10.0) == pytest.approx(10.02)
    assert p.due(10.019) == []
    assert len(p.due(10.02)) == 1
    assert len(p.due(10.1)) == 4
    assert p.sent_samples == LEAD + 5 * CHUNK
    assert p.queued_samples == RATE - p.sent_samples


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.tuples(st.floats(0.0, 0.08), st.integers(0, 2000)), min_size=1, max_size=40),
    lead_s=st.sampled_from([0.02, 0.06, 0.12, 0.3]),
)
def test_never_ahead_and_everything_sent(steps: list[tuple[float, int]], lead_s: float) -> None:
    p = Pacer(RATE, lead_s=lead_s)
    lead = round(lead_s * RATE)
    now = 5.0
    p.start(now)
    speaker = Loudspeaker(now)
    pushed: list[np.ndarray] = []
    sent: list[np.ndarray] = []
    counter = 0

    def send(now: float) -> None:
        chunks = p.due(now)
        speaker.advance(now)
        speaker.receive(chunks)
        sent.extend(chunks)
        assert speaker.buffered <= lead + 1e-6  # the client never holds more than the lead
        assert p.sent_samples <= (now - 5.0) * RATE + lead + 1e-6
        assert all(len(c) == p.chunk_samples for c in chunks)  # partial chunks wait

    for dt, n in steps:
        now += dt
        x = np.arange(counter, counter + n, dtype=np.float32)
        counter += n
        p.push(x)
        pushed.append(x)
        send(now)
    p.finish()
    # drain, sleeping exactly as an async loop would
    for _ in range(10_000):
        wake = p.next_due_time(now)
        if wake is None:
            break
        assert wake >= now
        now = wake
        chunks = p.due(now)
        assert chunks, "next_due_time promised a chunk"
        speaker.advance(now)
        speaker.receive(chunks)
        sent.extend(chunks)
        assert speaker.buffered <= lead + 1e-6
    assert p.done and p.queued_samples == 0
    expect = np.concatenate(pushed) if pushed else np.zeros(0, np.float32)
    got = np.concatenate(sent) if sent else np.zeros(0, np.float32)
    np.testing.assert_array_equal(got, expect)
    assert all(len(c) == p.chunk_samples for c in sent[:-1])


def test_underrun_does_not_allow_a_burst() -> None:
    # audio arrives slower than real time; after a gap the client's buffer is
    # empty and has not played the missing time, so only `lead` may go out
    p = Pacer(RATE)
    p.start(0.0)
    p.push(np.zeros(CHUNK, np.float32))
    assert len(p.due(0.0)) == 1
    p.push(np.zeros(RATE, np.float32))  # one second arrives after a 2 s stall
    chunks = p.due(2.0)
    assert sum(len(c) for c in chunks) == LEAD


def test_partial_chunk_waits_for_finish() -> None:
    p = Pacer(RATE)
    p.push(np.ones(CHUNK + 7, np.float32))
    assert [len(c) for c in p.due(0.0)] == [CHUNK]
    assert p.next_due_time(0.0) is None  # nothing ready until more audio or finish
    assert not p.done
    p.finish()
    assert p.next_due_time(0.0) == 0.0
    assert [len(c) for c in p.due(0.0)] == [7]
    assert p.done and p.next_due_time(1.0) is None


def test_chunks_span_pushed_blocks() -> None:
    p = Pacer(RATE)
    for i in range(5):
        p.push(np.full(CHUNK // 3, i, np.float32))
    chunks = p.due(0.0)
    assert len(chunks) == 1
    np.testing.assert_array_equal(chunks[0][: CHUNK // 3], 0)
    np.testing.assert_array_equal(chunks[0][-1:], 3)


def test_flush_drops_queue_and_finishes() -> None:
    p = Pacer(RATE)
    p.push(np.zeros(RATE, np.float32))
    p.start(0.0)
    p.due(0.0)
    assert p.flush() == RATE - LEAD
    assert p.queued_samples == 0 and p.done and p.finished
    assert p.due(1.0) == [] and p.next_due_time(1.0) is None
    assert p.sent_samples == LEAD
    with pytest.raises(RuntimeError):
        p.push(np.zeros(10, np.float32))


def test_validation() -> None:
    with pytest.raises(ValueError):
        Pacer(RATE, lead_s=0.01, chunk_s=0.02)
    with pytest.raises(ValueError):
        Pacer(0)
    p = Pacer(RATE)
    p.start(1.0)
    with pytest.raises(ValueError):
        p.due(0.5)
    with pytest.raises(ValueError):
        p.push(np.zeros((2, 2), np.float32))
