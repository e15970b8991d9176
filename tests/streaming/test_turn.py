"""Endpointer driven by scripted probability sequences (frame = 32 ms)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from streaming.turn import (
    FRAME_S,
    BargeIn,
    EndOfTurn,
    EndpointConfig,
    Endpointer,
    InvalidTransition,
    SpeechStarted,
    SpeechStopped,
    TurnEvent,
    TurnPhase,
)

S, Q, MID = 0.9, 0.05, 0.42  # speech, quiet, between neg_threshold (0.35) and threshold (0.5)


def run(
    ep: Endpointer, probs: list[float], eot: Sequence[float | None] | None = None
) -> list[tuple[int, TurnEvent]]:
    """Step through ``probs``; return (frame index that produced it, event)."""
    out: list[tuple[int, TurnEvent]] = []
    for i, p in enumerate(probs):
        k = ep.frame
        for ev in ep.step(p, None if eot is None else eot[i]):
            out.append((k, ev))
    return out


def events(
    ep: Endpointer, probs: list[float], eot: Sequence[float | None] | None = None
) -> list[TurnEvent]:
    return [ev for _, ev in run(ep, probs, eot)]


def test_seconds_become_frames_once() -> None:
    f = EndpointConfig().frames(0.032)
    assert (f.start, f.stop, f.barge_in, f.prefix_padding) == (2, 16, 3, 10)
    assert f.max_turn == 938 and f.min_silence == 4
    assert f.neg_threshold == pytest.approx(0.35)
    assert EndpointConfig(stop_s=0.32).frames(0.032).stop == 10  # exact multiples stay exact
    assert EndpointConfig(stop_s=0.064).frames(0.032).min_silence == 2  # capped at stop


def test_start_and_stop_positions_are_exact() -> None:
    ep = Endpointer()  # start 2 frames, stop 16 frames
    probs = [Q] * 10 + [S] * 20 + [Q] * 20
    timeline = run(ep, probs)
    assert [ev for _, ev in timeline] == [
        SpeechStarted(10),
        SpeechStopped(30),
        EndOfTurn(46, "silence", 30),
    ]
    # decided on the 2nd speech frame and on the 16th silent frame
    assert [k for k, _ in timeline] == [11, 45, 45]
    assert ep.phase is TurnPhase.LISTENING


def test_short_blips_are_ignored() -> None:
    ep = Endpointer()
    assert events(ep, [Q, S, Q, S, Q, Q, S, Q] * 5) == []
    assert ep.phase is TurnPhase.LISTENING
    # a longer start requirement ignores longer blips
    ep = Endpointer(EndpointConfig(start_s=0.15))  # 5 frames
    assert events(ep, [Q] + [S] * 4 + [Q]) == []
    assert events(ep, [S] * 5) == [SpeechStarted(6)]


def test_start_needs_threshold_not_neg_threshold() -> None:
    ep = Endpointer()
    assert events(ep, [MID] * 10) == []
    assert events(ep, [S, MID, S, S]) == [SpeechStarted(12)]


def test_hysteresis_keeps_speech_between_thresholds() -> None:
    ep = Endpointer(EndpointConfig(stop_s=0.16))  # 5 frames
    # MID frames (>= neg_threshold) keep speech going however long they last
    evs = events(ep, [S] * 3 + [MID] * 30 + [Q] * 5)
    assert evs == [SpeechStarted(0), SpeechStopped(33), EndOfTurn(38, "silence", 33)]
    # once paused, MID frames count as silence and do not resume speech
    ep = Endpointer(EndpointConfig(stop_s=0.16))
    evs = events(ep, [S] * 3 + [Q] + [MID] * 4)
    assert evs == [SpeechStarted(0), SpeechStopped(3), EndOfTurn(8, "silence", 3)]


def test_pauses_shorter_than_stop_do_not_end_the_turn() -> None:
    ep = Endpointer()  # 16-frame hangover
    probs = [S] * 10 + [Q] * 15 + [S] * 5 + [Q] * 14 + [S] * 3 + [Q] * 16
    evs = events(ep, probs)
    assert evs == [SpeechStarted(0), SpeechStopped(47), EndOfTurn(63, "silence", 47)]


def test_new_turn_after_end_of_turn() -> None:
    ep = Endpointer(EndpointConfig(stop_s=0.096))  # 3 frames
    evs = events(ep, [S] * 4 + [Q] * 3 + [Q] * 2 + [S] * 2 + [Q] * 3)
    assert evs == [
        SpeechStarted(0),
        SpeechStopped(4),
        EndOfTurn(7, "silence", 4),
        SpeechStarted(9),
        SpeechStopped(11),
        EndOfTurn(14, "silence", 11),
    ]


def test_max_turn_forces_end() -> None:
    ep = Endpointer(EndpointConfig(max_turn_s=0.32))  # 10 frames
    evs = events(ep, [Q] * 2 + [S] * 10)
    assert evs == [SpeechStarted(2), SpeechStopped(12), EndOfTurn(12, "max_turn", 12)]
    # continuing speech must build a fresh start run
    assert events(ep, [S]) == []
    assert events(ep, [S]) == [SpeechStarted(12)]


def test_barge_in_only_while_responding() -> None:
    ep = Endpointer()  # barge-in 3 frames, start 2 frames
    events(ep, [S] * 3 + [Q] * 16)
    ep.response_started()
    assert ep.phase is TurnPhase.RESPONDING
    # a 2-frame "mm-hm" would start speech in LISTENING, but not a barge-in
    assert events(ep, [S, S, Q, Q]) == []
    assert ep.phase is TurnPhase.RESPONDING
    k = ep.frame
    assert events(ep, [S, S, S]) == [BargeIn(k), SpeechStarted(k)]
    assert ep.phase is TurnPhase.USER_SPEAKING
    # in LISTENING the same speech is a plain start
    ep2 = Endpointer()
    assert [type(e) for e in events(ep2, [S, S, S])] == [SpeechStarted]


def test_loud_speech_interrupts_sooner_than_faint_speech() -> None:
    ep = Endpointer(EndpointConfig(loud_barge_in_s=0.064))  # loud: 2 frames, others: 3
    ep.response_started()

    def step_all(frames: list[tuple[float, bool]]) -> list[TurnEvent]:
        return [e for p, loud in frames for e in ep.step(p, loud=loud)]

    # two faint speech frames, or a faint frame then a loud one: not yet
    assert step_all([(S, False), (S, False), (Q, False)]) == []
    assert step_all([(S, False), (S, True), (Q, True)]) == []
    # two loud speech frames in a row interrupt
    k = ep.frame
    assert step_all([(S, True), (S, True)]) == [BargeIn(k), SpeechStarted(k)]
    # the loud rule never lengthens barge-in, and is off by default
    ep2 = Endpointer(EndpointConfig(loud_barge_in_s=0.2))
    ep2.response_started()
    assert [type(e) for p in [S, S, S] for e in ep2.step(p, loud=True)] == [BargeIn, SpeechStarted]
    ep3 = Endpointer()
    ep3.response_started()
    assert [e for p in [S, S] for e in ep3.step(p, loud=True)] == []
    with pytest.raises(ValueError, match="loud_barge_in_s"):
        EndpointConfig(loud_barge_in_s=0.0).frames()


def test_response_finished_returns_to_listening() -> None:
    ep = Endpointer()
    ep.response_started()
    ep.response_finished()
    assert ep.phase is TurnPhase.LISTENING
    assert events(ep, [S, S]) == [SpeechStarted(0)]
    with pytest.raises(InvalidTransition):
        ep.response_started()  # the user is speaking
    ep.response_finished()  # no-op outside RESPONDING
    assert ep.phase is TurnPhase.USER_SPEAKING


def test_external_end_of_turn() -> None:
    cfg = EndpointConfig(min_silence_s=0.096, eot_threshold=0.6)  # 3 silent frames
    probs = [S] * 5 + [Q] * 20
    # the model is confident from the first silent frame: confirmed after 3 frames
    ep = Endpointer(cfg)
    eot = [0.1] * 5 + [0.9] * 20
    assert events(ep, probs, eot) == [
        SpeechStarted(0),
        SpeechStopped(5),
        EndOfTurn(8, "external", 5),
    ]
    # the model says "not done" (mid-sentence pause): the stop_s fallback decides
    ep = Endpointer(cfg)
    assert events(ep, probs, [0.2] * 25) == [
        SpeechStarted(0),
        SpeechStopped(5),
        EndOfTurn(21, "silence", 5),
    ]
    # high eot_prob during speech does nothing; it must come with silence
    ep = Endpointer(cfg)
    assert events(ep, [S] * 10, [1.0] * 10) == [SpeechStarted(0)]
    # the model becomes confident late in the pause
    ep = Endpointer(cfg)
    eot = [0.1] * 15 + [0.7] * 10
    assert events(ep, probs, eot) == [
        SpeechStarted(0),
        SpeechStopped(5),
        EndOfTurn(16, "external", 5),
    ]


def test_pause_ms_if_previews_the_silence_step_will_count() -> None:
    ep = Endpointer(EndpointConfig(stop_s=0.5, min_silence_s=0.064, eot_threshold=0.8))
    assert ep.pause_ms_if(Q) is None  # listening: no user turn yet
    events(ep, [S, S, S])
    assert ep.phase is TurnPhase.USER_SPEAKING
    assert ep.pause_ms_if(S) is None and ep.pause_ms_if(MID) is None  # still speech (hysteresis)
    seen = []
    for _ in range(3):
        seen.append(ep.pause_ms_if(Q))
        ep.step(Q)
    assert seen == pytest.approx([32.0, 64.0, 96.0])
    assert ep.pause_ms_if(S) is None  # speech would resume the turn
    assert ep.pause_ms_if(MID) == pytest.approx(128.0)  # in a pause, MID stays silence
    # what it previews is what the external rule reads: a confident head now ends the turn
    assert events(ep, [Q], eot=[0.9]) == [SpeechStopped(3), EndOfTurn(7, "external", 3)]
    assert ep.pause_ms_if(Q) is None


def test_force_end_of_turn() -> None:
    ep = Endpointer()
    events(ep, [Q] * 3 + [S] * 5)
    assert ep.force_end_of_turn() == [SpeechStopped(8), EndOfTurn(8, "commit", 8)]
    assert ep.phase is TurnPhase.LISTENING
    # commit with nothing heard still ends the turn, at the current position
    events(ep, [Q] * 2)
    assert ep.force_end_of_turn() == [EndOfTurn(10, "commit", 10)]
    ep.response_started()
    assert ep.force_end_of_turn() == []


def test_reset_and_padded_start() -> None:
    ep = Endpointer()
    events(ep, [S] * 4)
    ep.reset()
    assert ep.phase is TurnPhase.LISTENING and ep.frame == 0
    assert events(ep, [Q] * 20 + [S] * 2) == [SpeechStarted(20)]
    assert ep.padded_start(20) == 10 and ep.padded_start(3) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start_s": 0},
        {"stop_s": -1},
        {"stop_s": float("nan")},
        {"threshold": 0},
        {"threshold": 1.5},
        {"neg_threshold": 0.6},
        {"max_turn_s": 0.05},
        {"barge_in_s": 0},
        {"prefix_padding_s": -0.1},
        {"eot_threshold": 0},
        {"min_silence_s": 0},
    ],
)
def test_validate_rejects_bad_values(kwargs: dict[str, float]) -> None:
    cfg = EndpointConfig(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cfg.validate()
    with pytest.raises(ValueError):
        Endpointer(cfg)


def test_default_config_is_valid() -> None:
    assert EndpointConfig().validate() == EndpointConfig()


def test_late_tier_ends_a_turn_on_a_less_sure_signal_after_a_longer_silence() -> None:
    """eot 0.6 never reaches eot_threshold 0.9; the late tier (0.5 after 8 frames) ends the turn
    after 8 frames of silence, well before the 20-frame hangover; without it, the hangover does."""

    def run(late: float | None) -> EndOfTurn:
        ep = Endpointer(EndpointConfig(stop_s=20 * FRAME_S, min_silence_s=2 * FRAME_S,
                                       eot_threshold=0.9, late_eot_threshold=late,
                                       late_silence_s=8 * FRAME_S))  # fmt: skip
        for _ in range(5):
            ep.step(0.9)
        for _ in range(40):
            ends = [e for e in ep.step(0.0, eot_prob=0.6) if isinstance(e, EndOfTurn)]
            if ends:
                return ends[0]
        raise AssertionError("no end of turn")

    late = run(0.5)
    assert (late.reason, late.frame - late.speech_end) == ("external", 8)
    plain = run(None)
    assert (plain.reason, plain.frame - plain.speech_end) == ("silence", 20)
    with pytest.raises(ValueError, match="late_eot_threshold"):
        EndpointConfig(late_eot_threshold=1.5).validate()


def test_low_snr_frames_confirm_the_learned_end_after_their_own_silence() -> None:
    """In noise the level gate cannot see through, the VAD's silence already lags the speech,
    so frames stepped with low_snr=True confirm a sure head after low_snr_min_silence_s."""

    def run(low_snr: bool, low_s: float | None) -> int:
        ep = Endpointer(EndpointConfig(stop_s=20 * FRAME_S, min_silence_s=3 * FRAME_S,
                                       eot_threshold=0.9, low_snr_min_silence_s=low_s))  # fmt: skip
        for _ in range(5):
            ep.step(0.9)
        for _ in range(40):
            ends = [e for e in ep.step(0.0, eot_prob=0.95, low_snr=low_snr) if isinstance(e, EndOfTurn)]
            if ends:
                assert ends[0].reason == "external"
                return ends[0].frame - ends[0].speech_end
        raise AssertionError("no end of turn")

    assert run(False, 2 * FRAME_S) == 3  # a clean frame keeps min_silence_s
    assert run(True, 2 * FRAME_S) == 2
    assert run(True, None) == 3  # no low-SNR confirm configured
    with pytest.raises(ValueError, match="low_snr_min_silence_s"):
        EndpointConfig(low_snr_min_silence_s=0.0).validate()


def test_low_snr_frames_end_the_speech_under_their_own_bound() -> None:
    """Silero's probability falls slowly after speech in noise; frames stepped with
    low_snr=True end it under low_snr_neg_threshold, clean frames under neg_threshold."""

    def run(low_snr: bool, low_neg: float | None) -> int:
        ep = Endpointer(EndpointConfig(stop_s=20 * FRAME_S, min_silence_s=2 * FRAME_S,
                                       eot_threshold=0.9, low_snr_neg_threshold=low_neg))  # fmt: skip
        for _ in range(5):
            ep.step(0.9)
        for n, p in enumerate([0.45, 0.45, 0.4, 0.3, 0.2, 0.1, 0.0, 0.0, 0.0]):
            ends = [e for e in ep.step(p, eot_prob=0.95, low_snr=low_snr) if isinstance(e, EndOfTurn)]
            if ends:
                return n
        raise AssertionError("no end of turn")

    assert run(False, 0.5) == 4  # clean: speech ends at 0.3 (under 0.35), then 2 frames
    assert run(True, 0.5) == 1  # noisy: 0.45 is already under 0.5
    assert run(True, None) == 4
    with pytest.raises(ValueError, match="low_snr_neg_threshold"):
        EndpointConfig(low_snr_neg_threshold=0.6).validate()  # above the speech threshold
