from __future__ import annotations

import numpy as np
import pytest

from streaming.level import QuietGate, first_audible, refine_speech_end

RATE = 16000


def tone(seconds: float, amp: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amp * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_moves_a_late_vad_end_back_to_the_level_drop() -> None:
    x = np.concatenate([tone(0.5, 0.3), np.zeros(RATE // 2, np.float32)])
    true_end = RATE // 2
    got = refine_speech_end(x, true_end + 1600, RATE)  # VAD said 100 ms late
    assert abs(got - true_end) <= RATE // 100


def test_noise_floor_raises_the_threshold() -> None:
    rng = np.random.default_rng(0)
    noise = (0.02 * rng.standard_normal(RATE)).astype(np.float32)  # about -34 dBFS
    x = noise.copy()
    x[: RATE // 2] += tone(0.5, 0.3)
    got = refine_speech_end(x, RATE // 2 + 1600, RATE)
    assert abs(got - RATE // 2) <= RATE // 100


def test_keeps_the_coarse_end_when_nothing_is_loud() -> None:
    x = np.zeros(RATE, np.float32)
    assert refine_speech_end(x, 8000, RATE) == 8000


def test_first_audible_skips_padding_and_keeps_a_lead_in() -> None:
    x = np.concatenate([np.zeros(RATE // 5, np.float32), tone(0.2, 0.3)])
    start = first_audible(x, RATE)
    assert start is not None and abs(start - (RATE // 5 - RATE // 100)) <= RATE // 100
    assert first_audible(np.zeros(RATE, np.float32), RATE) is None


def _tone(db: float) -> np.ndarray:
    """One 32 ms VAD window of a tone at ``db`` dBFS RMS."""
    return tone(0.032, np.sqrt(2) * 10 ** (db / 20))


def _trained_gate(below: float = 0.9, depth_db: float = 30.0) -> QuietGate:
    gate = QuietGate(below, depth_db=depth_db)
    for _ in range(10):  # background at -60 dBFS, heard outside a turn
        assert gate.gate(0.05, _tone(-60), in_turn=False) == 0.05
    for _ in range(10):  # speech at -20 dBFS
        assert gate.gate(0.98, _tone(-20), in_turn=True) == 0.98
    return gate


def test_quiet_gate_passes_everything_until_background_and_speech_are_known() -> None:
    gate = QuietGate(0.9)
    assert gate.quiet_level() is None
    assert gate.gate(0.4, _tone(-80), in_turn=True) == 0.4  # no background yet
    assert gate.gate(0.05, _tone(-60), in_turn=False) == 0.05
    assert gate.gate(0.4, _tone(-80), in_turn=True) == 0.4  # no speech level yet


def test_quiet_gate_makes_a_quiet_window_in_a_turn_silence() -> None:
    gate = _trained_gate()
    # min(background + 6, speech - 30) = min(-54, -50)
    assert gate.quiet_level() == pytest.approx(-54.0, abs=0.1)
    assert gate.gate(0.8, _tone(-58), in_turn=True) == 0.0  # Silero still unsure: gated
    assert gate.gate(0.8, _tone(-58), in_turn=False) == 0.8  # outside a turn: untouched
    assert gate.gate(0.8, _tone(-52), in_turn=True) == 0.8  # above the background: speech
    assert gate.gate(0.95, _tone(-58), in_turn=True) == 0.95  # Silero sure: untouched


def test_quiet_gate_stays_shut_in_loud_noise_and_opens_in_digital_silence() -> None:
    gate = _trained_gate()
    for _ in range(60):  # noise 15 dB under the speech: no window is 30 dB under it
        gate.gate(0.1, _tone(-35), in_turn=False)
    assert gate.quiet_level() == pytest.approx(-50.0, abs=0.1)
    assert gate.gate(0.8, _tone(-36), in_turn=True) == 0.8
    for _ in range(60):  # digital silence: the background counts as -70 dBFS
        gate.gate(0.1, np.zeros(512, np.float32), in_turn=False)
    assert gate.quiet_level() == pytest.approx(-64.0, abs=0.1)
    assert gate.gate(0.8, _tone(-66), in_turn=True) == 0.0
    assert gate.gate(0.8, _tone(-60), in_turn=True) == 0.8


def test_a_shallower_gate_opens_in_noise_the_default_one_stays_shut_in() -> None:
    # noise 15 dB under the speech: the default 30 dB depth never opens, 12 dB does,
    # and then only at the background's level, not in the speech between
    shallow, deep = _trained_gate(depth_db=12.0), _trained_gate()
    for gate in (shallow, deep):
        for _ in range(60):
            gate.gate(0.1, _tone(-35), in_turn=False)
    assert shallow.quiet_level() == pytest.approx(-32.0, abs=0.1)  # min(-35 + 6, -20 - 12)
    assert shallow.gate(0.8, _tone(-34), in_turn=True) == 0.0
    assert shallow.gate(0.8, _tone(-25), in_turn=True) == 0.8
    assert deep.gate(0.8, _tone(-34), in_turn=True) == 0.8


def test_quiet_gate_rejects_a_bad_setting() -> None:
    with pytest.raises(ValueError, match="below"):
        QuietGate(1.5)
    with pytest.raises(ValueError, match="depth_db"):
        QuietGate(0.9, depth_db=0.0)


def test_low_snr_margin_opens_the_gate_in_noise_too_loud_for_the_depth() -> None:
    # background -60, speech -45: 15 dB SNR, under the 20 dB depth
    def heard(gate: QuietGate) -> QuietGate:
        for _ in range(10):
            gate.gate(0.05, _tone(-60), in_turn=False)
        for _ in range(10):
            gate.gate(0.98, _tone(-45), in_turn=True)
        return gate

    plain = heard(QuietGate(1.0, depth_db=20.0))
    assert plain.quiet_level() == pytest.approx(-65.0, abs=0.1)  # under the background: shut
    assert plain.gate(0.8, _tone(-59), in_turn=True) == 0.8
    low = heard(QuietGate(1.0, depth_db=20.0, low_snr_margin_db=3.0))
    assert low.quiet_level() == pytest.approx(-57.0, abs=0.1)  # background + 3
    assert low.gate(0.8, _tone(-59), in_turn=True) == 0.0
    assert low.gate(0.8, _tone(-50), in_turn=True) == 0.8  # soft speech stays speech
    # with enough SNR the margin changes nothing
    assert _trained_gate(1.0, 20.0).quiet_level() == heard_deep().quiet_level()
    with pytest.raises(ValueError):
        QuietGate(1.0, low_snr_margin_db=7.0)


def heard_deep() -> QuietGate:
    gate = QuietGate(1.0, depth_db=20.0, low_snr_margin_db=3.0)
    for _ in range(10):
        gate.gate(0.05, _tone(-60), in_turn=False)
    for _ in range(10):
        gate.gate(0.98, _tone(-20), in_turn=True)
    return gate


def test_headroom_tells_whether_the_gate_can_find_pauses() -> None:
    gate = QuietGate(1.0, depth_db=20.0)
    assert gate.headroom_db() is None  # nothing heard yet
    for _ in range(10):
        gate.gate(0.05, _tone(-60), in_turn=False)
    assert gate.headroom_db() is None  # no speech level yet
    for _ in range(10):
        gate.gate(0.98, _tone(-20), in_turn=True)
    assert gate.headroom_db() == pytest.approx(6.0, abs=0.1)  # 40 dB SNR: quiet = background + 6
    noisy = QuietGate(1.0, depth_db=20.0)
    for _ in range(10):
        noisy.gate(0.05, _tone(-60), in_turn=False)
    for _ in range(10):
        noisy.gate(0.98, _tone(-45), in_turn=True)
    assert noisy.headroom_db() == pytest.approx(-5.0, abs=0.1)  # 15 dB SNR: quiet under the noise
