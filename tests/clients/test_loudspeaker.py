"""The simulated loudspeaker, driven by scripted arrival times (no sockets, no sleeping)."""

from __future__ import annotations

import pytest

from clients.loudspeaker import Loudspeaker

RATE = 1000  # 1 sample per ms keeps the arithmetic readable


def test_starts_after_jitter_allowance_and_plays_in_real_time() -> None:
    spk = Loudspeaker(RATE, jitter_s=0.04)
    spk.push(1, 500, now=10.0)
    spk.advance(10.03)
    assert spk.played_ms(1) == 0  # still inside the 40 ms allowance
    spk.advance(10.14)
    assert spk.played_ms(1) == pytest.approx(100)
    assert spk.is_sounding(10.2)


def test_underrun_waits_instead_of_skipping_and_is_recorded() -> None:
    spk = Loudspeaker(RATE, jitter_s=0.0)
    spk.push(1, 100, now=0.0)
    spk.advance(0.25)  # dry at 0.1
    assert spk.played_ms(1) == pytest.approx(100)
    assert not spk.is_sounding(0.25)
    spk.push(1, 100, now=0.3)  # resumes at 0.3, not at 0.1
    spk.advance(0.35)
    assert spk.played_ms(1) == pytest.approx(150)
    p = spk.playout(1)
    assert p is not None and p.underruns == [(pytest.approx(0.1), pytest.approx(0.2))]


def test_running_dry_after_done_is_the_end_not_an_underrun() -> None:
    spk = Loudspeaker(RATE, jitter_s=0.0)
    spk.push(1, 100, now=0.0)
    spk.finish(1, now=0.05)
    spk.advance(0.5)
    p = spk.playout(1)
    assert p is not None and p.end_reason == "drained"
    assert p.silent_at == pytest.approx(0.1) and p.underruns == []


def test_flush_drops_the_buffer_at_once() -> None:
    spk = Loudspeaker(RATE, jitter_s=0.0)
    spk.push(1, 1000, now=0.0)
    spk.flush(0.2, 1)
    p = spk.playout(1)
    assert p is not None and p.end_reason == "flushed" and p.silent_at == 0.2
    assert p.dropped == 800 and p.buffered == 0
    spk.advance(1.0)
    assert spk.played_ms(1) == pytest.approx(200)  # nothing more is played
    spk.push(1, 100, now=1.0)  # stale audio of the flushed reply is ignored
    assert spk.played_ms(1) == pytest.approx(200) and p.buffered == 0


def test_flush_during_an_underrun_fell_silent_when_it_ran_dry() -> None:
    spk = Loudspeaker(RATE, jitter_s=0.0)
    spk.push(1, 100, now=0.0)
    spk.flush(0.3, 1)
    p = spk.playout(1)
    assert p is not None and p.silent_at == pytest.approx(0.1) and p.dropped == 0


def test_new_response_replaces_the_old_one() -> None:
    spk = Loudspeaker(RATE, jitter_s=0.0)
    spk.push(1, 1000, now=0.0)
    spk.push(2, 100, now=0.5)
    old = spk.playout(1)
    assert old is not None and old.end_reason == "replaced" and old.silent_at == 0.5
    assert spk.current is not None and spk.current.response_id == 2
