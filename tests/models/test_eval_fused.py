"""eval_fused: the phase shift keeps an item's labels on the audio; the report's gate lines."""

from __future__ import annotations

import numpy as np
import pytest

from models.training.eot_tune import WIN, Trace, score
from models.training.eval_fused import (
    answers_by_hearing_line,
    dbfs_lines,
    pause_gate_line,
    shift_item,
)


def test_shift_item_moves_every_position_with_the_audio() -> None:
    pcm = np.arange(40000, dtype=np.int16)
    it = {"pcm": pcm, "mel": np.zeros((250, 80)), "start": 3000, "end": 30000, "pause": (12000, 18000),
          "text": "what is one plus one"}
    s = shift_item(it, 160)
    assert s["pcm"][0] == pcm[160] and len(s["pcm"]) == len(pcm) - 160 and "mel" not in s
    assert (s["start"], s["end"], s["pause"]) == (2840, 29840, (11840, 17840))
    assert s["pcm"][s["end"]] == pcm[it["end"]] and s["pcm"][s["pause"][0]] == pcm[12000]
    assert shift_item(dict(it, pause=None), 480)["pause"] is None
    c = shift_item(dict(it, end_dbfs=29000, pause_dbfs=(11000, 18500)), 160)
    assert (c["end_dbfs"], c["pause_dbfs"]) == (28840, (10840, 18340))
    assert shift_item(it, 0) is it
    with pytest.raises(ValueError):
        shift_item(it, 2400)  # past the speech start of some items: not a phase any more
    with pytest.raises(ValueError):
        shift_item(dict(it, start=100), 160)


def test_the_report_scores_the_rule_by_the_latency_contract_per_level_band() -> None:
    n = 60
    vad = np.array([0.05] * 5 + [0.9] * 20 + [0.05] * 35)
    head = np.where(np.arange(n) >= 27, 0.99, 0.0)  # the rule (0.9, 2) fires at window 27
    ends = np.arange(1, n + 1) * WIN
    item = {"skill": "addition", "pause": None, "pause_dbfs": None, "end": int(ends[30])}
    loud = Trace(dict(item, end_dbfs=int(ends[24]), peak_dbfs=-12.0), ends, vad, head, np.zeros(n, int))
    quiet = Trace(dict(item, end_dbfs=int(ends[10]), peak_dbfs=-30.0), ends, vad, head, np.zeros(n, int))
    lines = dbfs_lines([loud, quiet], (0.9, 2, None, None))
    assert "all (n=2): within 200 ms 0.500" in lines[1]
    assert "under -25 dBFS (n=1): within 200 ms 0.000" in lines[2]  # 544 ms after the -40 dBFS end
    assert "-18 dBFS and up (n=1): within 200 ms 1.000" in lines[3] and len(lines) == 4
    assert "rebuild" in dbfs_lines([Trace(item, ends, vad, head, np.zeros(n, int))], (0.9, 2, None, None))[0]


def test_the_pause_gate_line_reads_the_server_rule_over_all_pauses_and_inside_questions() -> None:
    n = 60
    vad = np.array([0.05] * 5 + [0.9] * 10 + [0.05] * 10 + [0.9] * 10 + [0.05] * 25)
    head = np.where((np.arange(n) >= 17) & (np.arange(n) < 20), 0.99, 0.0)  # fires in the pause
    ends = np.arange(1, n + 1) * WIN
    pause = (int(ends[15]), int(ends[24]))
    item = {"skill": "addition", "pause": pause, "end": int(ends[35]), "pause_word": 4}
    filler = Trace(dict(item, text="what is one times zero please", pause_word=5), ends, vad, head, np.zeros(n, int))
    inside = Trace(dict(item, text="what is one times zero"), ends, vad, head, np.zeros(n, int))
    quiet = Trace(dict(inside.item), ends, vad, np.zeros(n), np.zeros(n, int))
    line = pause_gate_line(score([filler, inside, quiet], 0.9, 2))
    # 2 fires in 3 pauses; 1 in the 2 pauses that more than fillers follow
    assert "all pauses (n=3) 0.333" in line and "fillers to come (n=2) 0.500" in line


def test_answers_are_split_by_whether_the_question_and_its_key_words_were_heard() -> None:
    rows = [("what is one plus one", "What is one plus one?", "One plus one is two.", True),
            ("spell cat", "spell cat", "Cat is spelled C, A, T.", False),
            ("what is one plus", "what is one plus two", "One plus two is three.", True),
            ("hey spell cat um", "spell cat", "Cat is spelled C, A, T.", True),  # fillers only
            ("spell hat", "spell cat", "Cat is spelled C, A, T.", False),
            ("spell", "spell cat", "Cat is spelled C, A, T.", False)]
    line = answers_by_hearing_line(rows)
    assert "heard word for word 0.500 (n=2)" in line and "misheard 0.500 (n=4)" in line
    # key words held by rows 1, 2 and 4; row 3 lacks "two", rows 5 and 6 "cat"
    assert "key words heard in 0.500 of the items" in line
    assert "with them 0.667 (n=3), without 0.333 (n=3)" in line
    assert "(n=0)" in answers_by_hearing_line([])
