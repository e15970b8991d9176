"""The speech plans keep held-out voices and phrasings out of training."""

import random
import subprocess

import numpy as np
import pytest

from models.training import speech_data as sd


def _variant(name: str) -> str:
    return name.split("+", 1)[1] if "+" in name else ""


@pytest.mark.parametrize("split", ["train", "wide", "bare", "accent"])
def test_training_plans_never_use_held_out_voices_or_phrasings(split):
    plan = sd.item_plan(0, 3000, split)
    held_names = {v.name for v in sd.eval_voices()}
    held_variants = set(sd.ESPEAK_VARIANTS_HELD) | {"edward2"}  # edward with another klatt mode
    for ex, v, _ in plan:
        assert v.name not in held_names
        if v.engine == "espeak":
            assert v.name.split("+")[0] in sd.ESPEAK_FAMILIES_TRAIN
            assert _variant(v.name) not in held_variants
        elif v.engine == "flite":
            assert v.name in sd.FLITE_TRAIN
        if split != "bare":
            assert ex.split == "train"


def test_the_wide_split_is_mostly_new_variants_and_deterministic():
    a = sd.item_plan(0, 2000, "wide")
    assert [(e.question, v, s) for e, v, s in a] == [
        (e.question, v, s) for e, v, s in sd.item_plan(0, 2000, "wide")
    ]
    groups = [v.group for _, v, _ in a]
    assert 0.75 < groups.count("espeak-wide") / len(a) < 0.85
    assert 0.1 < groups.count("flite-wide") / len(a) < 0.2
    new = [v for _, v, _ in a if _variant(v.name) in sd.ESPEAK_VARIANTS_WIDE]
    assert len(new) > 0.5 * groups.count("espeak-wide")


def test_only_the_wide_flite_voices_get_a_pitch_shift(monkeypatch):
    cmds = []

    def fake_run(cmd, **kw):
        cmds.append(cmd)
        import soundfile as sf

        sf.write(cmd[cmd.index("-o") + 1], np.zeros(1600, np.float32), 16000)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(sd.subprocess, "run", fake_run)
    sd.synth(sd.Voice("flite", "awb", "flite-awb"), "hello", random.Random(0))
    sd.synth(sd.Voice("flite", "awb", "flite-wide"), "hello", random.Random(0))
    assert not any("f0_shift" in c for c in cmds[0])
    shift = [c for c in cmds[1] if c.startswith("f0_shift=")]
    assert len(shift) == 1 and 0.7 <= float(shift[0].split("=")[1]) <= 1.4


def test_accent_rules_rewrite_phonemes_and_exclusive_features_never_meet():
    ph = "h'eI w0t Iz D@ k'apIt@L 0v f'o@ T'3:ti:n pl'i:z k'aUnt"
    assert sd.accent_phonemes(ph, ("th-stop",)) == ph.replace("D", "d").replace("T", "t")
    assert sd.accent_phonemes(ph, ("face-mono", "h-drop")).startswith("'e: w0t")
    assert "f'o@ " in sd.accent_phonemes(ph, ("schwa-full",))  # a diphthong's @ stays
    assert sd.accent_phonemes(ph, ()) == ph
    rng = random.Random(0)
    draws = [sd.draw_accent(rng) for _ in range(500)]
    assert all(d for d in draws)
    for ex in sd.ACCENT_EXCLUSIVE:
        assert not any(len(ex & set(d)) > 1 for d in draws)
    names = {n for n, _ in sd.ACCENT_RULES}
    assert set().union(*map(set, draws)) == names  # every feature is used


def test_an_accented_utterance_speaks_rewritten_phonemes(monkeypatch):
    said = []

    def fake_run(cmd, **kw):
        if "-x" in cmd:
            return subprocess.CompletedProcess(cmd, 0, stdout="T'ri: pl'Vs\n", stderr="")
        said.append(cmd[-1])
        import soundfile as sf

        sf.write(cmd[cmd.index("-w") + 1], np.zeros(1600, np.float32), 16000)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(sd.subprocess, "run", fake_run)
    v = sd.Voice("espeak", "en-us", "espeak-accent")
    sd.synth(v, "three plus", random.Random(0), ("th-stop", "strut-foot"))
    sd.synth(v, "three plus", random.Random(0))
    assert said == ["[[t'ri: pl'Us]]", "three plus"]
    plan = sd.item_plan(0, 500, "accent")
    assert {v.group for _, v, _ in plan} == {"espeak-accent"}
    assert len({v.name for _, v, _ in plan}) > 200  # families x all training variants


def test_a_break_style_pause_keeps_the_item_but_says_it_in_one_synthesis():
    ex = sd.Example(question="what is one times zero please", answer="One times zero is zero.",
                    skill="multiplication", key_word="zero", split="heldout", has_filler=True,
                    phrasing="what is {a} times {b}", fact="times:1:0")  # fmt: skip
    v = sd.Voice("espeak", "en-us", "espeak-heldout-family")
    a = sd.make_utterance(ex, v, random.Random(3), 1.0, "split")
    b = sd.make_utterance(ex, v, random.Random(3), 1.0, "break")
    assert a.pause is not None and b.pause is not None and a.pause_word == b.pause_word
    assert b.pause_break and not a.pause_break  # stage 3 labels the two kinds apart
    assert a.pause[1] - a.pause[0] == b.pause[1] - b.pause[0]  # the same drawn gap
    assert a.speech_start == b.speech_start
    first_a, first_b = a.pause[0] - a.speech_start, b.pause[0] - b.speech_start
    assert 0.6 * first_a < first_b < 1.2 * first_a  # the same words before the pause
    assert not np.array_equal(a.pcm[: a.pause[0]], b.pcm[: b.pause[0]])
    c = sd.make_utterance(ex, v, random.Random(3), 0.0, "break")  # no pause: nothing changes
    d = sd.make_utterance(ex, v, random.Random(3), 0.0, "split")
    assert np.array_equal(c.pcm, d.pcm)
    assert not c.pause_break


@pytest.mark.parametrize("split", ["wide", "accent"])
def test_wide_and_accent_caches_extend_from_an_offset(monkeypatch, tmp_path, split):
    calls = []
    monkeypatch.setattr(sd, "DATA_DIR", tmp_path)
    monkeypatch.setattr(sd.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(sd, "build_cache", lambda path, seed, n, s, p, w, offset=0, **kw:
                        calls.append((path.name, n, s, offset)))  # fmt: skip
    sd.main(["--only", split, f"--n-{split}", "20000", "--offset", "6000"])
    sd.main(["--only", split, f"--n-{split}", "6000"])
    assert calls == [(f"speech_{split}_s0_n20000_from6000.npy", 20000, split, 6000),
                     (f"speech_{split}_s0_n6000.npy", 6000, split, 0)]  # fmt: skip
    # a shorter plan is a prefix of a longer one, so a cache and its extension hold what one
    # whole cache would
    assert sd.item_plan(0, 200, split)[:60] == sd.item_plan(0, 60, split)


def test_the_wide_dev_set_takes_wide_items_past_the_training_cache_with_audio(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(sd, "DATA_DIR", tmp_path)
    monkeypatch.setattr(sd.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(sd, "build_cache", lambda path, seed, n, s, p, w, offset=0, **kw:
                        calls.append((path.name, n, s, offset, kw.get("keep_pcm"))))  # fmt: skip
    sd.main(["--only", "dev-wide", "--n-wide", "24800", "--offset", "24000"])
    sd.main(["--only", "dev-wide", "--n-wide", "24400"])
    assert calls == [("speech_devwide_s0_n24800_from24000.npy", 24800, "wide", 24000, True),
                     ("speech_devwide_s0_n24400_from24000.npy", 24400, "wide", 24000, True)]  # fmt: skip


def test_contract_bounds_end_speech_at_the_last_window_above_minus_40_dbfs():
    # 0.2 s lead, 0.5 s of speech at -20 dBFS, then a 0.2 s reverb-like tail at -50 dBFS
    sr, lead = sd.SAMPLE_RATE, 3200
    loud = np.full(8000, 0.1, np.float32) * np.sign(np.sin(np.arange(8000)))
    tail = np.full(3200, 10 ** (-50 / 20), np.float32)
    clean = np.concatenate([np.zeros(lead, np.float32), loud, tail, np.zeros(sr // 2, np.float32)])
    end = lead + len(loud) + len(tail)  # the synthesis label: the segment's end, tail included
    e, pause, peak = sd.contract_bounds(clean, lead, end, None)
    assert e == lead + len(loud) and pause is None and peak == pytest.approx(-20, abs=0.1)
    # a pause: its start is where the first half's loud part ends, its end where the second begins
    gap = np.zeros(6400, np.float32)
    two = np.concatenate([np.zeros(lead, np.float32), loud, tail, gap, tail, loud, np.zeros(sr // 2, np.float32)])
    p0 = lead + len(loud) + len(tail)
    p1 = p0 + len(gap)
    e, pause, _ = sd.contract_bounds(two, lead, p1 + len(tail) + len(loud), (p0, p1))
    assert pause == (lead + len(loud), p1 + len(tail)) and e == p1 + len(tail) + len(loud)
    # a segment with nothing above -40 dBFS keeps its label
    assert sd.contract_bounds(clean * 1e-3, lead, end, None)[0] == end


def test_an_utterance_carries_the_latency_contract_ground_truth():
    ex, voice, s = sd.item_plan(0, 40, "eval")[0]
    u = sd.make_utterance(ex, voice, random.Random(s), 0.0)
    assert u.speech_start < u.end_dbfs <= u.speech_end and u.peak_dbfs is not None
    assert u.peak_dbfs < 0


def test_a_joe_utterance_is_the_same_each_time_it_is_made():
    pytest.importorskip("piper")
    ex, voice, s = next(p for p in sd.item_plan(0, 400, "train") if p[1].engine == "joe")
    a = sd.make_utterance(ex, voice, random.Random(s), 0.0)
    sd.make_utterance(ex, voice, random.Random(s + 1), 0.0)  # the session serves another call between
    b = sd.make_utterance(ex, voice, random.Random(s), 0.0)
    np.testing.assert_array_equal(a.pcm, b.pcm)
