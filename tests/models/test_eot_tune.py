"""The end-of-turn tuning tool's offline rule is the server's Endpointer rule."""

from __future__ import annotations

import numpy as np
import pytest

from models.training.eot_tune import (
    STOP_WINDOWS,
    WIN,
    Trace,
    by_dbfs,
    fire_window,
    parse_rule,
    score,
    tier_allowed,
    within_limits,
)
from streaming.turn import EndOfTurn, EndpointConfig, Endpointer


def endpointer_fire(vad: np.ndarray, head: np.ndarray, thr: float, sil: int) -> int | None:
    ep = Endpointer(EndpointConfig(stop_s=STOP_WINDOWS * 0.032, min_silence_s=sil * 0.032,
                                   eot_threshold=thr, max_turn_s=600.0))  # fmt: skip
    for k, (p, h) in enumerate(zip(vad, head, strict=True)):
        if any(isinstance(e, EndOfTurn) for e in ep.step(float(p), eot_prob=float(h))):
            return k
    return None


@pytest.mark.parametrize("seed", range(40))
def test_fire_window_matches_the_endpointer(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 120
    # speech-like runs of VAD probabilities, with values around both hysteresis thresholds
    levels = rng.choice([0.05, 0.3, 0.42, 0.55, 0.9], size=n // 6 + 1)
    vad = np.repeat(levels, 6)[:n] + rng.uniform(-0.03, 0.03, n)
    head = rng.uniform(0, 1, n) ** 3
    thr, sil = float(rng.choice([0.5, 0.8, 0.9])), int(rng.integers(1, 4))
    tr = Trace({}, np.arange(1, n + 1) * WIN, vad, head, np.zeros(n, int))
    assert fire_window(tr, thr, sil) == endpointer_fire(vad, head, thr, sil)


def test_score_counts_delays_takeovers_and_pause_fires() -> None:
    n = 60
    vad = np.array([0.05] * 5 + [0.9] * 20 + [0.05] * 35)
    head = np.zeros(n)
    head[27:] = 0.95  # confident from window 27: the rule (0.9, 2) fires at window 27
    ends = np.arange(1, n + 1) * WIN
    item = {"skill": "addition", "pause": None, "end": int(ends[24])}  # speech ends at window 25's start
    tr = Trace(item, ends, vad, head, np.zeros(n, int))
    s = score([tr], 0.9, 2)
    assert s["early"] == 0 and s["p50"] == pytest.approx((ends[27] - ends[24]) / 16)
    late = Trace(dict(item, end=int(ends[40])), ends, vad, head, np.zeros(n, int))
    assert score([late], 0.9, 2)["early"] == 1.0  # fired before the labelled end: a takeover
    paused = Trace(dict(item, end=int(ends[-1]), pause=(int(ends[24]), int(ends[30]))), ends, vad, head,
                   np.zeros(n, int))  # fmt: skip
    s = score([paused], 0.9, 2)
    assert s["pause_fire"] == 1.0
    # a fire in the pause is before the speech end too; early_outside leaves it out
    assert s["early"] == 1.0 and s["early_outside"] == 0.0
    assert score([late], 0.9, 2)["early_outside"] == 1.0
    ok = {"pause_fire": 0.1, "early": 0.05}  # the reference rule: early cap min(0.05 + 0.02, 0.06)
    assert within_limits(dict(s, pause_fire=0.1, early=0.05), ok, absolute=True)
    assert not within_limits(dict(s, pause_fire=0.1, early=0.07, early_outside=0.0), ok, absolute=True)
    assert not within_limits(dict(s, pause_fire=0.11, early=0.0), ok, absolute=True)
    # a pause before only fillers is counted in all pauses, and apart from the others
    text = "what is one times zero please um"
    filler = Trace(dict(paused.item, text=text, pause_word=5), ends, vad, head, np.zeros(n, int))
    inside = Trace(dict(paused.item, text=text, pause_word=4), ends, vad, head, np.zeros(n, int))
    quiet = Trace(dict(inside.item), ends, vad, np.zeros(n), np.zeros(n, int))
    s = score([filler, inside, quiet], 0.9, 2)
    assert s["pause_fire"] == pytest.approx(2 / 3) and s["pauses_before_fillers"] == pytest.approx(1 / 3)
    assert s["pause_fire_inside"] == pytest.approx(1 / 2)
    # a fire 96 ms into the pause before "please um" answers the complete question in time; the
    # same fire before more words ("times zero") is a takeover, and so is a fire far into the pause
    assert s["within200"] == 0.0 and s["within200_question"] == pytest.approx(1 / 3)
    assert s["pause_fire_before_fillers"] == 1.0 and s["within200_bare"] == 0.0  # no bare end here
    bare = Trace(dict(item, text="what is one times zero"), ends, vad, head, np.zeros(n, int))
    assert score([bare, filler], 0.9, 2)["within200_bare"] == 1.0  # 96 ms after its end
    far = Trace(dict(filler.item, pause=(int(ends[20]), int(ends[30]))), ends, vad, head, np.zeros(n, int))
    assert score([far], 0.9, 2)["within200_question"] == 0.0


def test_late_tier_fires_on_a_less_sure_head_after_a_long_silence() -> None:
    n = 100
    vad = np.array([0.05] * 5 + [0.9] * 20 + [0.05] * 75)
    head = np.zeros(n)
    head[27:] = 0.6  # never reaches 0.9
    ends = np.arange(1, n + 1) * WIN
    complete = Trace({"skill": "addition", "pause": None, "end": int(ends[24])}, ends, vad, head,
                     np.zeros(n, int))  # fmt: skip
    incomplete = Trace({"skill": "incomplete", "pause": None, "end": int(ends[24])}, ends, vad,
                       head.copy(), np.zeros(n, int))  # fmt: skip
    assert fire_window(complete, 0.9, 2) == 25 + STOP_WINDOWS - 1  # the silence fallback
    assert fire_window(complete, 0.9, 2, (0.5, 24)) == 25 + 24 - 1
    assert fire_window(complete, 0.9, 2, (0.7, 24)) == 25 + STOP_WINDOWS - 1
    s = score([complete, incomplete], 0.9, 2, (0.5, 24))
    assert s["p50"] == pytest.approx(24 * 32.0)
    assert s["incomplete_fire"] == 1.0  # answered before the 1.5 s fallback
    assert score([complete, incomplete], 0.9, 2)["incomplete_fire"] == 0.0


def test_the_within_objective_prefers_more_answers_in_200_ms_over_a_lower_median() -> None:
    from models.training.eot_tune import objective

    fast = {"within200": 0.65, "p50": 115.0, "p95": 1529.0}
    sure = {"within200": 0.76, "p50": 141.0, "p95": 1515.0}
    assert objective(fast) < objective(sure)  # delay: the lower median wins
    assert objective(sure, "within") < objective(fast, "within")
    tie = dict(sure, p50=200.0)
    assert objective(sure, "within") < objective(tie, "within")  # ties go to the faster rule
    with pytest.raises(ValueError):
        objective(sure, "fastest")


def test_low_snr_confirm_applies_where_the_gate_headroom_is_small() -> None:
    n = 60
    vad = np.array([0.05] * 5 + [0.9] * 20 + [0.05] * 35)
    head = np.full(n, 0.95)
    ends = np.arange(1, n + 1) * WIN
    item = {"skill": "addition", "pause": None, "end": int(ends[24])}
    noisy = Trace(item, ends, vad, head, np.zeros(n, int), headroom=np.full(n, -4.0))
    clean = Trace(item, ends, vad, head, np.zeros(n, int), headroom=np.full(n, 6.0))
    unknown = Trace(item, ends, vad, head, np.zeros(n, int))  # no headroom recorded: never low
    assert fire_window(noisy, 0.9, 3) == 25 + 3 - 1
    assert fire_window(noisy, 0.9, 3, None, (2.0, 1)) == 25  # one window of the VAD's silence
    assert fire_window(clean, 0.9, 3, None, (2.0, 1)) == 25 + 3 - 1
    assert fire_window(unknown, 0.9, 3, None, (2.0, 1)) == 25 + 3 - 1
    assert score([noisy, clean], 0.9, 3, None, (2.0, 1))["p50"] == pytest.approx((1 + 3) / 2 * 32)


def test_low_snr_pause_probability_ends_a_slowly_falling_vad_sooner() -> None:
    n = 60
    vad = np.array([0.05] * 5 + [0.9] * 20 + [0.6, 0.45, 0.4, 0.3] + [0.05] * 31)  # Silero in noise
    head = np.full(n, 0.95)
    ends = np.arange(1, n + 1) * WIN
    item = {"skill": "addition", "pause": None, "end": int(ends[24])}
    noisy = Trace(item, ends, vad, head, np.zeros(n, int), headroom=np.full(n, -4.0))
    clean = Trace(item, ends, vad, head, np.zeros(n, int), headroom=np.full(n, 6.0))
    assert fire_window(noisy, 0.9, 3, None, (2.0, 2)) == 28 + 2 - 1  # speech ends at 0.3 (< 0.35)
    assert fire_window(noisy, 0.9, 3, None, (2.0, 2, 0.0)) == 28 + 2 - 1  # 0: Silero's own bound
    assert fire_window(noisy, 0.9, 3, None, (2.0, 2, 0.5)) == 26 + 2 - 1  # 0.45 is under 0.5
    assert fire_window(clean, 0.9, 3, None, (2.0, 2, 0.5)) == 28 + 3 - 1  # clean windows keep both


def test_a_rule_set_by_hand_lets_later_tiers_add_no_pause_fires_and_few_early_ones() -> None:
    ref = {"pause_fire": 0.15, "early": 0.2}
    hand = {"pause_fire": 0.112, "early": 0.073}  # over both caps (--rule)
    same = dict(hand, within200=0.8)
    assert tier_allowed(same, ref, True, hand)  # a late tier that fires nowhere earlier
    assert not tier_allowed(dict(same, early=0.075), ref, True, hand)
    assert not tier_allowed(dict(same, pause_fire=0.114), ref, True, hand)
    # the low-SNR confirm may add up to a point of fires before the end, never pause fires
    assert tier_allowed(dict(same, early=0.075), ref, True, hand, early_slack=0.01)
    assert not tier_allowed(dict(same, early=0.085), ref, True, hand, early_slack=0.01)
    assert not tier_allowed(dict(same, pause_fire=0.114), ref, True, hand, early_slack=0.01)
    assert not tier_allowed(same, ref, True)  # without the hand rule the caps apply
    assert tier_allowed({"pause_fire": 0.05, "early": 0.04}, ref, True)


def test_a_rule_set_by_hand_may_fix_the_late_tier_too() -> None:
    assert parse_rule("0.95,96") == (0.95, 3, None)
    assert parse_rule("0.95,96,0.3,768") == (0.95, 3, (0.3, 24))
    for bad in ("0.95", "0.95,96,0.3", "x,96", "0.95,0", "0.95,96,1.5,768"):
        with pytest.raises(SystemExit, match="--rule"):
            parse_rule(bad)


def test_by_dbfs_scores_against_the_latency_contract_end() -> None:
    n = 60
    vad = np.array([0.05] * 5 + [0.9] * 20 + [0.05] * 35)
    head = np.zeros(n)
    head[27:] = 0.95  # the rule (0.9, 2) fires at window 27
    ends = np.arange(1, n + 1) * WIN
    # the synthesis label puts the end after the fire (a reverb tail); -40 dBFS ends it before
    item = {"skill": "addition", "pause": None, "end": int(ends[30]), "end_dbfs": int(ends[24]),
            "pause_dbfs": None}  # fmt: skip
    tr = Trace(item, ends, vad, head, np.zeros(n, int))
    assert score([tr], 0.9, 2)["early"] == 1.0
    s = score(by_dbfs([tr]), 0.9, 2)
    assert s["early"] == 0.0 and s["p50"] == pytest.approx((ends[27] - ends[24]) / 16)
    assert tr.item["end"] == int(ends[30])  # the trace itself is left alone
    paused = Trace(dict(item, pause=(int(ends[28]), int(ends[29])), pause_dbfs=(int(ends[26]), int(ends[29]))),
                   ends, vad, head, np.zeros(n, int))  # fmt: skip
    assert score([paused], 0.9, 2)["pause_fire"] == 0.0
    assert score(by_dbfs([paused]), 0.9, 2)["pause_fire"] == 1.0
    with pytest.raises(ValueError, match="dBFS"):
        by_dbfs([Trace({"end": 1, "pause": None}, ends, vad, head, np.zeros(n, int))])
