"""The fused model: torch network properties, ONNX export parity and the numpy runtime.

Uses the ``tiny`` preset with random weights and a small tokenizer, so it runs
in seconds and never needs a trained bundle.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models import domain  # noqa: E402
from models.bundle import BundleError  # noqa: E402
from models.fused import LOOK_FULL_MS, FusedModel, FusedState, look_ms, look_tail  # noqa: E402
from models.tokenizer import train_bpe  # noqa: E402
from models.training.export_fused import AudioFramesOut, write_bundle  # noqa: E402
from models.training.fused import (  # noqa: E402
    AudioFrames,
    AudioText,
    Encoder,
    FusedConfig,
    FusedLM,
    emissions,
    regulate_indices,
)
from models.training.lm import LMConfig  # noqa: E402
from models.training.train_fused import (  # noqa: E402
    HOLD,
    SURE,
    WARMUP,
    augment_row,
    check_lm_options,
    confuse_row,
    encoder_run,
    eot_labels,
    heard_as,
    lm_sequence,
    make_lm_batch,
    pause_rows,
    piece_confusions,
    quiet_bank,
    warm_mel,
)


@pytest.fixture(scope="module")
def parts() -> dict:
    torch.manual_seed(0)
    tok = train_bpe(["what is seven plus five", "seven plus five is twelve"], 160)
    cfg = FusedConfig.from_name("tiny", vocab_size=tok.vocab_size)
    lm_cfg = LMConfig.from_name("tiny", vocab_size=tok.vocab_size, max_seq_len=48)
    enc = Encoder(cfg).eval()
    lm = FusedLM(lm_cfg, cfg).eval()
    torch.nn.init.normal_(lm.proj.weight, std=0.02)  # non-zero so parity covers it
    af = AudioFramesOut(AudioFrames(cfg), torch.zeros(192), torch.ones(192)).eval()
    return {
        "cfg": cfg,
        "lm_cfg": lm_cfg,
        "encoder": enc,
        "lm": lm,
        "tokenizer": tok.to_dict(),
        "audio_text": AudioText(cfg).eval(),
        "audio_frames": af,
    }


@pytest.fixture(scope="module")
def bundle(parts: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("b") / "fused"
    write_bundle(parts, out, codec_bundle="no-codec", fp16=False)
    return out


def test_fp16_storage_stays_close(parts: dict, bundle: Path, tmp_path: Path) -> None:
    write_bundle(parts, tmp_path / "half", codec_bundle="no-codec", fp16=True)
    full, half = FusedModel(bundle), FusedModel(tmp_path / "half")
    assert (tmp_path / "half" / "lm_step.onnx").stat().st_size < (
        bundle / "lm_step.onnx"
    ).stat().st_size
    mel = np.random.default_rng(2).standard_normal((1, 16, 80)).astype(np.float32)
    st = np.zeros((full.enc_layers, 1, full.state_len, full.enc_dim), np.float32)
    a = full.encoder.run(None, {"mel": mel, "state": st})[0]
    b = half.encoder.run(None, {"mel": mel, "state": st})[0]
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max()


def test_encoder_streaming_equals_offline(parts: dict) -> None:
    enc = parts["encoder"]
    x = torch.randn(1, 96, 80)
    with torch.no_grad():
        full, _, _ = enc(x, enc.empty_state(1))
        st, outs = enc.empty_state(1), []
        for a, b in [(0, 4), (4, 12), (12, 48), (48, 96)]:
            o, _, st = enc(x[:, a:b], st)
            outs.append(o)
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)


def test_lm_cached_equals_full(parts: dict) -> None:
    lm, lm_cfg = parts["lm"], parts["lm_cfg"]
    probs = torch.softmax(torch.randn(1, 7, lm_cfg.vocab_size), -1)
    enc = torch.randn(1, 7, parts["cfg"].enc_dim)
    with torch.no_grad():
        full, eot_full, _ = lm(probs, enc)
        cache = lm.lm.empty_cache(1)
        l1, e1, cache = lm(probs[:, :4], enc[:, :4], cache, torch.tensor([0]))
        l2, e2, _ = lm(probs[:, 4:], enc[:, 4:], cache, torch.tensor([4]))
    torch.testing.assert_close(torch.cat([l1, l2], 1), full, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.cat([e1, e2], 1), eot_full, atol=1e-4, rtol=1e-4)


def test_emissions_collapse_repeats() -> None:
    top = torch.tensor([0, 5, 5, 0, 5, 7, 7, 0])
    logits = torch.nn.functional.one_hot(top, 9).float()
    assert emissions(logits).tolist() == [False, True, False, False, True, True, False, False]


def test_eot_labels_mark_a_complete_question_before_its_fillers() -> None:
    tok = train_bpe(["what is one times zero please um", "count from seven to seventeen"] * 3, 400)
    text = "what is one times zero please um"
    ids = tok.encode(text)
    assert len(ids) == 7  # one piece per word
    assert eot_labels(tok, ids, text, True).tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert eot_labels(tok, ids, text, True, "last").tolist() == [0, 0, 0, 0, 0, 0, 1]
    assert eot_labels(tok, ids, text, False).tolist() == [0] * 7  # incomplete: never ends
    # misheard: only the last piece; a word heard in part ("seven" of "seventeen") is no end
    t2 = "count from seven to seventeen"
    assert eot_labels(tok, tok.encode("count from seven to seven"), t2, True).tolist() == [0, 0, 0, 0, 1]
    assert eot_labels(tok, tok.encode("count from seven"), t2, True).tolist() == [0, 0, 1]
    pieces = tok.encode("what is one times zero please")[:5] + tok.encode(" p")
    assert eot_labels(tok, pieces, text, True).tolist() == [0, 0, 0, 0, 1, 1]


def test_a_break_style_pause_is_no_end_even_after_a_complete_question() -> None:
    from models.training.train_fused import HOLD, break_pause_labels

    # "what is one times zero <pause> please": pieces at 40 ms frames 10..14, then "please"
    # at frame 30; the pause ends at sample 27 * 640 (frame 27's end is 28 * 640)
    lab = np.array([0, 0, 0, 0, 1, 1], np.float32)
    frames = np.array([10, 11, 12, 13, 14, 30])
    assert break_pause_labels(lab, frames, 27 * 640).tolist() == [HOLD] * 5 + [1]
    # a piece emitted only after the speech resumed keeps its text label
    assert break_pause_labels(lab, np.array([10, 11, 12, 13, 29, 30]), 27 * 640).tolist() == [
        HOLD, HOLD, HOLD, HOLD, 1, 1]  # fmt: skip
    assert lab.tolist() == [0, 0, 0, 0, 1, 1]  # the input is left alone


def test_break_pause_modes_hold_where_the_question_goes_on() -> None:
    from models.training.train_fused import holds_break_pause

    fill = {"text": "what is one times zero please", "skill": "multiplication", "pause_word": 5,
            "pause_break": True}  # fmt: skip
    inside = dict(fill, pause_word=3)  # "what is one <pause> times zero please"
    split = dict(inside, pause_break=False)  # two syntheses: the text's labels in every mode
    for mode, want in (("continue", [True, True, False]), ("inside", [False, True, False]),
                       ("text", [False, False, False])):  # fmt: skip
        assert [holds_break_pause(it, mode) for it in (fill, inside, split)] == want


def test_eot_loss_follows_the_teacher_instead_of_the_labels() -> None:
    from models.training.train_fused import HOLD, eot_loss

    eot = torch.tensor([[-1.0, 0.0, 1.0, 1.0]])
    teacher = torch.tensor([[5.0, -2.0, 0.5, 3.0]])
    x = torch.zeros(1, 4, requires_grad=True)
    eot_loss(x, eot, teacher).backward()
    assert x.grad is not None and x.grad[0, 0] == 0  # unlabelled steps stay out
    # the loss is lowest where the head equals the teacher, whatever the labels say
    y = teacher.clone().requires_grad_(True)
    eot_loss(y, eot, teacher).backward()
    assert y.grad is not None and torch.allclose(y.grad, torch.zeros(1, 4), atol=1e-7)
    z = teacher.clone().requires_grad_(True)
    eot_loss(z, eot).backward()  # labels: step 1 is pushed down, steps 2-3 up
    assert z.grad is not None and z.grad[0, 1] > 0 and z.grad[0, 2] < 0 and z.grad[0, 3] < 0
    # a HOLD step (a break-style pause) is "no end" with or without the teacher
    held = torch.tensor([[-1.0, 0.0, HOLD, 1.0]])
    h = teacher.clone().requires_grad_(True)
    eot_loss(h, held, teacher).backward()
    assert h.grad is not None and h.grad[0, 2] > 0 and torch.allclose(h.grad[0, [0, 1, 3]], torch.zeros(3), atol=1e-7)
    assert torch.equal(eot_loss(teacher, held), eot_loss(teacher, torch.tensor([[-1.0, 0.0, 0.0, 1.0]])))
    # --hold-weight scales the HOLD step's pull, and only that step's
    g = []
    for hw in (1.0, 0.25):
        v = teacher.clone().requires_grad_(True)
        eot_loss(v, held, hold_weight=hw).backward()
        g.append(v.grad)
    assert g[1] is not None and g[0] is not None
    assert torch.allclose(g[1][0, 2], 0.25 * g[0][0, 2]) and torch.equal(g[1][0, [0, 1, 3]], g[0][0, [0, 1, 3]])


def test_prefix_labels_mark_a_whole_question_that_goes_on_as_sure() -> None:
    tok = train_bpe(["hey thanks a lot", "hey what is one times zero please"] * 3, 400)
    text = "hey thanks a lot"
    ids = tok.encode(text)
    assert len(ids) == 4
    assert eot_labels(tok, ids, text, True).tolist() == [0, 0, 0, 1]
    # "hey thanks" asks what "thanks" asks: the end, whatever a teacher says
    assert eot_labels(tok, ids, text, True, "prefix").tolist() == [0, SURE, 0, 1]
    # heard otherwise ("hey thanks a a"): the words so far decide, the last piece keeps 1
    assert eot_labels(tok, tok.encode("hey thanks a a"), text, True, "prefix").tolist() == [0, SURE, 0, 1]
    assert eot_labels(tok, ids, text, False, "prefix").tolist() == [0] * 4
    # "hey" alone and "hey what is one" (a cut question) ask nothing whole
    t2 = "hey what is one times zero please"
    got = eot_labels(tok, tok.encode(t2), t2, True, "prefix").tolist()
    assert got == eot_labels(tok, tok.encode(t2), t2, True).tolist() == [0, 0, 0, 0, 0, 1, 1]


def test_heard_as_makes_the_thank_of_thank_you_a_sure_end() -> None:
    tok = train_bpe(["hey thank you very much", "hey thanks a lot"] * 3, 400)
    text = "hey thank you very much"
    ids = tok.encode(text)
    assert [tok.decode([i]) for i in ids] == ["hey", " thank", " you", " very", " much"]
    # "thank" alone asks nothing: only "thank you" is a whole question
    assert eot_labels(tok, ids, text, True, "prefix").tolist() == [0, 0, SURE, 0, 1]
    thank = {"thank": "thanks"}
    assert eot_labels(tok, ids, text, True, "prefix", thank).tolist() == [0, SURE, SURE, 0, 1]
    # only the last word is read so, and only for the prefix labels
    assert eot_labels(tok, ids, text, True, "complete", thank).tolist() == [0, 0, 0, 0, 1]
    assert not domain.complete_question(["thank", "very"], heard_as=thank)
    assert domain.complete_question(["please", "thank"], heard_as=thank)
    assert heard_as(argparse.Namespace(heard_as="thank=thanks,bye=goodbye")) == {
        "thank": "thanks", "bye": "goodbye"}  # fmt: skip
    assert heard_as(argparse.Namespace()) == {}
    with pytest.raises(SystemExit, match="word=word"):
        heard_as(argparse.Namespace(heard_as="thank"))
    # options that would do nothing are refused
    ok = {"pause_token": "<reserved_0>", "eot_label": "prefix", "heard_as": "thank=thanks"}
    check_lm_options(argparse.Namespace(prefix_pauses=True, **ok))
    for bad in ({"eot_label": "complete"}, {"pause_token": None}):
        with pytest.raises(SystemExit):
            check_lm_options(argparse.Namespace(**{**ok, "prefix_pauses": True, "heard_as": "", **bad}))
    with pytest.raises(SystemExit, match="--heard-as needs"):
        check_lm_options(argparse.Namespace(**{**ok, "eot_label": "complete"}))


def test_eot_labels_reach_the_batch_through_augmentation() -> None:
    tok = train_bpe(["what is one times zero please"], 200)
    text = "what is one times zero please"
    ids = tok.encode(text)
    n, v = len(ids), tok.vocab_size
    probs = np.eye(v, dtype=np.float16)[ids]
    row = lm_sequence(tok, (probs, np.zeros((n, 8), np.float16), np.arange(n)), "Zero.", True)
    row["eot"] = eot_labels(tok, ids, text, True)
    _, _, _, eot = make_lm_batch([row], v, 8)
    nh = len(row["head"])
    assert eot[0, nh - 1] == 0.0 and eot[0, nh : nh + n].tolist() == row["eot"].tolist()
    assert (eot[0, nh + n :] == -1.0).all()
    rng = np.random.default_rng(3)
    for _ in range(20):
        aug = augment_row(row, rng)
        assert len(aug["eot"]) == aug["n_q"] and aug["eot"][-1] == 1.0


def test_confusions_move_mass_only_to_pieces_the_encoder_mixed_up() -> None:
    v = 6
    p = np.zeros((3, v), np.float16)
    p[0, [1, 2]] = [0.9, 0.1]  # top 1, some mass on 2
    p[1, [1, 3]] = [0.7, 0.3]  # top 1, some on 3
    p[2, 4] = 1.0  # top 4, sure
    rows = [{"probs": p, "n_q": 3, "eot": np.array([0.0, 0.0, 1.0], np.float32)}]
    c = piece_confusions(rows, v)
    assert c[1, 2] == pytest.approx(0.25, abs=1e-3) and c[1, 3] == pytest.approx(0.75, abs=1e-3)
    assert c[1, 1] == 0 and c[4].sum() == 0 and c[0].sum() == 0
    rng = np.random.default_rng(0)
    moved = 0
    for _ in range(50):
        out = confuse_row(rows[0], c, 1.0, rng)
        q = out["probs"]
        assert np.allclose(q.sum(-1), 1.0, atol=1e-3)
        assert q[2, 4] == pytest.approx(1.0)  # no confusion known for piece 4
        assert q[0, [0, 5]].sum() == 0 and q[0, [2, 3]].sum() > 0.2  # only to 2 or 3
        assert out["eot"] is rows[0]["eot"]  # the labels say what was said
        moved += int(q[0].argmax() != 1)
    assert 0 < moved < 50  # the neighbour sometimes wins
    assert np.array_equal(confuse_row(rows[0], c, 0.0, rng)["probs"], p.astype(np.float32))  # rate 0: as heard
    text = {"ids": [1, 2], "n_q": 2}
    assert confuse_row(text, c, 1.0, rng) is text
    # the last step alone (where the head is read), with the same neighbours
    two = {"probs": p[:2].copy(), "n_q": 2, "eot": np.array([0.0, 1.0], np.float32)}
    lasts = [confuse_row(two, c, 0.0, rng, last=1.0)["probs"] for _ in range(20)]
    assert all(np.array_equal(q[0], p[0].astype(np.float32)) for q in lasts)  # rate 0: first step as heard
    assert all(q[1, [2, 3]].sum() > 0.3 + 0.7 * 0.2 - 1e-3 for q in lasts)  # 0.3 there, >= 0.2 of the rest moved
    assert np.array_equal(confuse_row(two, c, 0.0, rng, last=0.0)["probs"], p[:2].astype(np.float32))


def test_pause_rows_put_a_labelled_pause_step_where_the_run_time_reads_the_head() -> None:
    tok = train_bpe(["what is one times zero please um", "count from seven to seventeen"] * 3, 400)
    text = "what is one times zero please"
    ids = tok.encode(text)
    assert len(ids) == 6  # one piece per word
    n, v, pid = len(ids), tok.vocab_size, tok.special("<reserved_0>")
    probs = np.eye(v, dtype=np.float16)[ids]
    frames = np.array([10, 14, 18, 22, 26, 40])  # "please" is heard after a pause
    row = lm_sequence(tok, (probs, np.zeros((n, 8), np.float16), frames), "Zero.", True)
    row["eot"] = eot_labels(tok, ids, text, True)
    # the pause starts at 17 000 samples (frame 26 is heard at 27 * 640 = 17 280)
    full, cut = pause_rows(row, {"pause": (17000, 24000)}, pid, look_ms=400.0)
    assert full["pause_eot"] == 1.0 and full["tail"] == row["tail"]
    assert cut["n_q"] == 5 and cut["tail"] == [] and cut["pause_eot"] == 1.0  # "... zero" <pause>
    p, _, tgt, eot = make_lm_batch([full, cut], v, 8)
    nh = len(row["head"])
    # full row: pieces, <pause> (labelled 1), then <eot> <assistant> and the answer's targets
    assert p[0, nh + n, pid] == 1.0 and eot[0, nh + n] == 1.0
    assert p[0, nh + n + 1, tok.special("<eot>")] == 1.0 and p[0, nh + n + 2, tok.special("<assistant>")] == 1.0
    assert tgt[0, nh + n + 2] == row["tail"][2]
    # truncated row: five pieces (not labelled again), the pause step, nothing after it
    assert p[1, nh + 5, pid] == 1.0 and eot[1, nh + 5] == 1.0
    assert (eot[1, nh : nh + 5] == -1.0).all() and (tgt[1] == -100).all() and (eot[1, nh + 6 :] == -1).all()
    # a pause cut short: only what was heard before its end; an incomplete question is 0
    short = pause_rows(dict(row, complete=False), {"pause": (9000, 12200)}, pid, look_ms=400.0)
    assert short[0]["pause_eot"] == 0.0 and short[1]["n_q"] == 3 and short[1]["pause_eot"] == 0.0
    # no pause inside, or one before any piece: the full row only
    assert len(pause_rows(row, {"pause": None}, pid, 400.0)) == 1
    assert len(pause_rows(row, {"pause": (100, 600)}, pid, 0.0)) == 1


def test_prefix_pauses_add_a_sure_pause_step_where_a_whole_question_goes_on() -> None:
    tok = train_bpe(["hey thank you very much", "hey thanks a lot"] * 3, 400)
    text = "hey thank you very much"
    ids = tok.encode(text)
    n, v, pid = len(ids), tok.vocab_size, tok.special("<reserved_0>")
    row = lm_sequence(tok, (np.eye(v, dtype=np.float16)[ids], np.zeros((n, 8), np.float16),
                            np.arange(10, 10 + 4 * n, 4)), "You are welcome.", True)  # fmt: skip
    row["eot"] = eot_labels(tok, ids, text, True, "prefix", {"thank": "thanks"})  # sure after 2, 3
    assert len(pause_rows(row, {"pause": None}, pid, 400.0)) == 1  # off: the full row only
    full, *cuts = pause_rows(row, {"pause": None}, pid, 400.0, prefixes=True)
    assert full["tail"] == row["tail"] and [c["n_q"] for c in cuts] == [2, 3]  # "hey thank", "hey thank you"
    assert all(c["pause_eot"] == SURE and c["tail"] == [] for c in cuts)
    _, _, tgt, eot = make_lm_batch([full, *cuts], v, 8)
    nh = len(row["head"])
    assert eot[1, nh + 2] == SURE and (eot[1, nh : nh + 2] == -1).all() and (tgt[1:] == -100).all()
    # an incomplete question, or a break-style pause held there (HOLD), adds none
    assert len(pause_rows(dict(row, complete=False), {"pause": None}, pid, 400.0, prefixes=True)) == 1
    held = dict(row, eot=np.where(np.arange(n) == 1, HOLD, row["eot"]).astype(np.float32))
    assert [c["n_q"] for c in pause_rows(held, {"pause": None}, pid, 400.0, prefixes=True)[1:]] == [3]


def test_pause_rows_can_give_the_pause_step_the_probe_state() -> None:
    tok = train_bpe(["what is one times zero please"] * 3, 400)
    ids = tok.encode("what is one times zero please")
    n, v, pid = len(ids), tok.vocab_size, tok.special("<reserved_0>")
    row = lm_sequence(tok, (np.eye(v, dtype=np.float16)[ids], np.ones((n, 8), np.float16),
                            np.array([10, 14, 18, 22, 26, 40])), "Zero.", True)  # fmt: skip
    row["eot"] = eot_labels(tok, ids, "what is one times zero please", True)
    at_end, at_pause = np.full(8, 2.0, np.float16), np.full(8, 3.0, np.float16)
    full, cut = pause_rows(row, {"pause": (17000, 24000)}, pid, 400.0, probe=(at_end, at_pause))
    _, enc, _, _ = make_lm_batch([full, cut], v, 8)
    nh = len(row["head"])
    assert (enc[0, nh + n] == 2.0).all() and (enc[1, nh + 5] == 3.0).all()  # the pause steps
    assert (enc[0, nh : nh + n] == 1.0).all() and (enc[0, nh + n + 1 :] == 0.0).all()
    # an item without a pause has no pause state; the plain rows keep a zero pause step
    (only,) = pause_rows(row, {"pause": None}, pid, 400.0, probe=(at_end, None))
    assert (make_lm_batch([only], v, 8)[1][0, nh + n] == 2.0).all()
    (plain,) = pause_rows(row, {"pause": None}, pid, 400.0)
    assert (make_lm_batch([plain], v, 8)[1][0, nh + n] == 0.0).all()


def test_regulator() -> None:
    idx, pos = regulate_indices([2, 0, 1])
    assert idx == [0, 0, 2]
    assert pos[0][0] == pytest.approx(0.25)


def test_onnx_parity_and_runtime(parts: dict, bundle: Path) -> None:
    fm = FusedModel(bundle)
    enc, lm = parts["encoder"], parts["lm"]
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(16000) * 0.05).astype(np.float32)
    # encoder: ORT chunked == torch offline
    mel = fm.fe.compute(pcm)
    n = len(mel) // 4 * 4
    with torch.no_grad():
        ref, _, _ = enc(torch.from_numpy(mel[None, :n]), enc.empty_state(1))
    st = np.zeros((fm.enc_layers, 1, fm.state_len, fm.enc_dim), np.float32)
    outs = []
    for a in range(0, n, 12):
        o, _, st = fm.encoder.run(None, {"mel": mel[None, a : min(n, a + 12)], "state": st})
        outs.append(o)
    assert np.abs(np.concatenate(outs, 1) - ref.numpy()).max() < 1e-4
    # LM step: ORT == torch
    probs = rng.random((1, 3, fm.vocab)).astype(np.float32)
    encx = rng.standard_normal((1, 3, fm.enc_dim)).astype(np.float32)
    ck = np.zeros(fm.cache_shape, np.float32)
    lo, eo, _, _ = fm.lm.run(None, {"probs": probs, "enc": encx, "start_pos": np.array([0]),
                                    "cache_k": ck, "cache_v": ck.copy()})  # fmt: skip
    with torch.no_grad():
        lt, et, _ = lm(torch.from_numpy(probs), torch.from_numpy(encx))
    assert np.abs(lo - lt.numpy()).max() < 1e-4 and np.abs(eo - et.numpy()).max() < 1e-4
    # runtime: pushing in chunks == pushing at once; API works end to end
    s1, s2 = fm.new_state(), fm.new_state()
    fm.push_audio(s1, pcm)
    for i in range(0, len(pcm), 320):
        fm.push_audio(s2, pcm[i : i + 320])
    assert s1.user_ids == s2.user_ids and s1.position == s2.position
    assert 0.0 <= fm.end_of_turn_probability(s2) <= 1.0
    fm.start_reply(s2)
    pieces = [p for p in iter(lambda: fm.next_text_piece(s2), None)]
    assert len(pieces) <= fm.options.max_reply_tokens
    fm.reset_turn(s2)
    assert s2.position == 2 and not s2.user_ids
    z = fm.latent_for("Seven plus five is twelve.")
    assert z.shape[0] == 192


def test_warmup_turns_start_from_the_state_training_prepends(
    parts: dict, tmp_path: Path
) -> None:
    write_bundle(parts | {"warmup": WARMUP}, tmp_path / "warm", codec_bundle="no-codec", fp16=False)
    fm = FusedModel(tmp_path / "warm")
    assert fm.bundle.config["encoder"]["warmup"] == WARMUP
    warm = warm_mel(WARMUP, 4)
    assert warm is not None and len(warm) > 0 and len(warm) % 4 == 0
    zeros = np.zeros_like(fm.warm_state)
    _, _, ref = fm.encoder.run(None, {"mel": warm[None], "state": zeros})
    assert np.abs(fm.warm_state).max() > 0 and np.allclose(fm.warm_state, ref, atol=1e-6)
    # every turn starts there, also after speech
    rng = np.random.default_rng(3)
    pcm = (rng.standard_normal(8000) * 0.05).astype(np.float32)
    st = fm.new_state()
    assert np.array_equal(st.enc_state, fm.warm_state)
    fm.push_audio(st, pcm)
    assert not np.array_equal(st.enc_state, fm.warm_state)
    fm.reset_turn(st)
    assert np.array_equal(st.enc_state, fm.warm_state)
    # the runtime hears what training's encoder_run (warm-up prepended) hears
    mel = fm.fe.compute(pcm)
    n = len(mel) // 4 * 4
    o, _, _ = fm.encoder.run(None, {"mel": mel[None, :n], "state": st.enc_state})
    with torch.no_grad():
        t, _ = encoder_run(parts["encoder"], mel, warm)
    assert np.abs(o[0] - t.numpy()).max() < 1e-4
    # the bank of training prefixes holds the warm-up's own noise
    assert any(np.array_equal(b[: len(warm)], warm) for b in quiet_bank())


@pytest.mark.parametrize("spec", [{"seconds": 1.0}, ["x"], {"seconds": "a", "dbfs": -60, "seed": 0}])
def test_bad_warmup_is_a_bundle_error(parts: dict, tmp_path: Path, spec: object) -> None:
    import json

    write_bundle(parts, tmp_path / "b", codec_bundle="no-codec", fp16=False)
    man = tmp_path / "b" / "manifest.json"
    m = json.loads(man.read_text())
    m["config"]["encoder"]["warmup"] = spec
    man.write_text(json.dumps(m))
    with pytest.raises(BundleError, match="warmup"):
        FusedModel(tmp_path / "b", verify=False)


def test_lookahead_is_a_copy_that_heard_the_tail(bundle: Path) -> None:
    fm = FusedModel(bundle)
    rng = np.random.default_rng(1)
    speech = (rng.standard_normal(12000) * 0.1).astype(np.float32)
    quiet = (rng.standard_normal(8000) * 0.001).astype(np.float32)
    st, ref = fm.new_state(), fm.new_state()
    fm.push_audio(st, speech)
    fm.push_audio(ref, speech)
    fm.push_audio(st, speech[:100])  # leave samples pending in the mel stream
    fm.push_audio(ref, speech[:100])
    assert len(st.mel.pending)
    before = (list(st.user_ids), st.position, st.frames, st.eot_logit, st.enc_state.copy(), st.cache_k.copy())
    pending, mel_buf = st.mel.pending.copy(), st.mel_buf.copy()
    recent = np.concatenate([quiet[:256], speech[:768]])
    tail = look_tail(recent, 400)  # the quietest 256-sample block, repeated
    assert len(tail) == 6400 and np.array_equal(tail[256:512], quiet[:256])
    look = fm.lookahead(st, tail)
    # the real state is untouched ...
    assert (list(st.user_ids), st.position, st.frames, st.eot_logit) == before[:4]
    assert np.array_equal(st.enc_state, before[4]) and np.array_equal(st.cache_k, before[5])
    assert np.array_equal(st.mel.pending, pending) and np.array_equal(st.mel_buf, mel_buf)
    # ... and the copy is exactly the state that heard the tail for real
    fm.push_audio(ref, tail)
    assert look.user_ids == ref.user_ids and look.position == ref.position and look.frames == ref.frames
    assert look.eot_logit == ref.eot_logit and np.array_equal(look.enc_state, ref.enc_state)
    assert fm.head_probability(look) == pytest.approx(1 / (1 + np.exp(-ref.eot_logit)) if ref.user_ids else 0.0)
    # resetting the copy leaves the real state alone; later real audio continues from it
    fm.reset_turn(look)
    assert np.array_equal(st.enc_state, before[4]) and np.array_equal(st.cache_k, before[5])
    fm.push_audio(st, quiet)
    again = fm.new_state()
    fm.push_audio(again, np.concatenate([speech, speech[:100], quiet]))
    assert st.user_ids == again.user_ids and st.frames == again.frames
    assert look_tail(np.zeros(0, np.float32), 100).size == 0


def test_lookahead_pushes_less_deeper_into_a_pause() -> None:
    """All of the lookahead up to LOOK_FULL_MS into a pause, then as much less as the pause
    grew: the copy's silence in all never exceeds lookahead + LOOK_FULL_MS."""
    assert look_ms(400.0, 32.0) == look_ms(400.0, LOOK_FULL_MS) == 400.0
    assert look_ms(400.0, LOOK_FULL_MS + 100.0) == 300.0
    assert look_ms(400.0, LOOK_FULL_MS + 400.0) == look_ms(400.0, 2000.0) == 0.0
    for pause in (128.0, 256.0, 448.0):
        assert pause + look_ms(400.0, pause) == 400.0 + LOOK_FULL_MS


def test_pause_step_is_a_probe_and_opens_the_reply(parts: dict, tmp_path: Path) -> None:
    write_bundle(parts | {"pause_token": "<reserved_0>"}, tmp_path / "p", codec_bundle="no-codec", fp16=False)
    fm, plain = FusedModel(tmp_path / "p"), FusedModel(tmp_path / "p")
    assert fm.bundle.config["end_of_turn"]["pause_token"] == "<reserved_0>"
    plain.pause_id = None  # the same weights, read at the last piece
    st = fm.new_state()
    assert fm.head_probability(st) == 0.0  # nothing heard yet
    fm.push_text(st, "what is seven plus five")
    pos, ck, cv, logit = st.position, st.cache_k.copy(), st.cache_v.copy(), st.eot_logit
    p = fm.head_probability(st)
    # the head read on a <pause> step at the next position, as torch computes it ...
    lm, tok = parts["lm"], fm.tok
    ids = [tok.special("<bos>"), tok.special("<user>")] + st.user_ids + [tok.special("<reserved_0>")]
    x = torch.nn.functional.one_hot(torch.tensor([ids]), fm.vocab).float()
    with torch.no_grad():
        _, eot, _ = lm(x, torch.zeros(1, len(ids), fm.enc_dim))
    assert p == pytest.approx(float(torch.sigmoid(eot[0, -1])), abs=1e-5)
    assert p != pytest.approx(plain.head_probability(st), abs=1e-6)
    # ... leaves no trace in the state, and is read once per position
    assert st.position == pos and st.eot_logit == logit
    assert np.array_equal(st.cache_k, ck) and np.array_equal(st.cache_v, cv)
    assert st.pause_at == pos and fm.head_probability(st) == p
    # the reply starts after <pause> <eot> <assistant>, as stage 3 trained it
    fm.start_reply(st)
    assert st.position == pos + 3
    x = torch.nn.functional.one_hot(
        torch.tensor([ids + [tok.special("<eot>"), tok.special("<assistant>")]]), fm.vocab
    ).float()
    with torch.no_grad():
        logits, _, _ = lm(x, torch.zeros(1, x.shape[1], fm.enc_dim))
    assert st._next == int(logits[0, -1].argmax())
    fm.reset_turn(st)
    assert st.pause_at == -1 and fm.head_probability(st) == 0.0


def test_pause_probe_that_hears_reads_the_latest_encoder_state(parts: dict, tmp_path: Path) -> None:
    write_bundle(parts | {"pause_token": "<reserved_0>", "pause_hears": True}, tmp_path / "h",
                 codec_bundle="no-codec", fp16=False)  # fmt: skip
    fm, deaf = FusedModel(tmp_path / "h"), FusedModel(tmp_path / "h")
    assert fm.bundle.config["end_of_turn"]["pause_hears"] is True and fm.pause_hears
    deaf.pause_hears = False
    st = fm.new_state()
    fm.push_text(st, "what is seven plus five")
    def fresh(st: FusedState) -> FusedState:  # a copy with no cached probe reading
        c = fm.clone_state(st)
        c.pause_at = -1
        return c

    p0 = fm.head_probability(st)  # no audio yet: a zero state, as a deaf probe reads it
    assert st.last_hidden is None and p0 == pytest.approx(deaf.head_probability(fresh(st)))
    h = np.random.default_rng(0).standard_normal(fm.enc_dim).astype(np.float32)
    st.last_hidden, st.frames = h, st.frames + 1  # as push_audio leaves it after a quiet frame
    p = fm.head_probability(st)
    lm, tok = parts["lm"], fm.tok
    ids = [tok.special("<bos>"), tok.special("<user>")] + st.user_ids + [tok.special("<reserved_0>")]
    x = torch.nn.functional.one_hot(torch.tensor([ids]), fm.vocab).float()
    enc = torch.zeros(1, len(ids), fm.enc_dim)
    enc[0, -1] = torch.from_numpy(h)
    with torch.no_grad():
        _, eot, _ = lm(x, enc)
    assert p == pytest.approx(float(torch.sigmoid(eot[0, -1])), abs=1e-5)
    assert p != pytest.approx(p0, abs=1e-6)
    assert deaf.head_probability(fresh(st)) == pytest.approx(p0)  # the deaf probe ignores it
    st.last_hidden = np.zeros_like(h)  # read once per frame: the same frame keeps its reading
    assert fm.head_probability(st) == p
    st.last_hidden = h
    fm.start_reply(st)  # the reply's <pause> step hears the same state
    x = torch.nn.functional.one_hot(
        torch.tensor([ids + [tok.special("<eot>"), tok.special("<assistant>")]]), fm.vocab
    ).float()
    enc = torch.cat([enc, torch.zeros(1, 2, fm.enc_dim)], 1)
    with torch.no_grad():
        logits, _, _ = lm(x, enc)
    assert st._next == int(logits[0, -1].argmax())
    fm.reset_turn(st)
    assert st.last_hidden is None
    fm.push_audio(st, np.random.default_rng(1).standard_normal(4000).astype(np.float32) * 0.1)
    assert st.last_hidden is not None and st.last_hidden.shape == (fm.enc_dim,)


def test_unknown_pause_token_is_a_bundle_error(parts: dict, tmp_path: Path) -> None:
    write_bundle(parts | {"pause_token": "<nope>"}, tmp_path / "p", codec_bundle="no-codec", fp16=False)
    with pytest.raises(BundleError, match="pause_token"):
        FusedModel(tmp_path / "p")


def test_audio_head_parity(parts: dict, bundle: Path) -> None:
    fm = FusedModel(bundle)
    chars = np.array([[40, 50, 60, 1, 45, 46]], np.int64)
    hid, ld = fm.audio_text.run(None, {"chars": chars})
    with torch.no_grad():
        th, tl = parts["audio_text"](torch.from_numpy(chars))
    assert np.abs(hid - th.numpy()).max() < 1e-4 and np.abs(ld - tl.numpy()).max() < 1e-4
    frames = np.random.default_rng(0).standard_normal((1, 13, hid.shape[2])).astype(np.float32)
    pos = np.random.default_rng(1).random((1, 13, 2)).astype(np.float32)
    (z,) = fm.audio_frames.run(None, {"frames": frames, "pos": pos})
    with torch.no_grad():
        tz = parts["audio_frames"](torch.from_numpy(frames), torch.from_numpy(pos))
    assert z.shape == (1, 13, 192) and np.abs(z - tz.numpy()).max() < 1e-4


def test_rvq_graph_equals_numpy() -> None:
    from models.codec import encode_stacked
    from models.fused import rvq_graph
    from models.runtime import create_session

    rng = np.random.default_rng(3)
    cbs = rng.standard_normal((3, 16, 8)).astype(np.float32)
    x = rng.standard_normal((10, 8)).astype(np.float32)
    (got,) = create_session(rvq_graph(cbs)).run(None, {"x": x})
    np.testing.assert_array_equal(got, encode_stacked(x, cbs))


def test_weights_come_back_from_a_bundle(parts: dict, tmp_path: Path) -> None:
    """from_bundle reads every trained weight back (fp16-rounded, as stored), and a re-export
    of what it read gives the same graphs, byte for byte."""
    import hashlib

    from models.training.from_bundle import load_bundle, write_checkpoints

    af = parts["audio_frames"]
    torch.manual_seed(1)
    mean, std = torch.randn(192), torch.rand(192) + 0.5
    src = parts | {"audio_frames": AudioFramesOut(af.m, mean, std).eval(), "warmup": WARMUP,
                   "eot": {"threshold": 0.9, "min_gap_ms": 80.0}}  # fmt: skip
    write_bundle(src, tmp_path / "a", codec_bundle="no-codec", fp16=True)
    got = load_bundle(tmp_path / "a")
    for key in ("encoder", "lm", "audio_text", "audio_frames"):
        want, have = src[key].state_dict(), got[key].state_dict()
        assert want.keys() == have.keys()
        for name, t in want.items():
            assert torch.equal(have[name], t.half().float()) or t.numel() < 1024 and torch.equal(
                have[name], t
            ), f"{key}.{name}"  # fp16 storage applies to tensors of 1024 elements or more
    assert got["warmup"] == WARMUP and got["eot"]["threshold"] == 0.9
    write_bundle(got, tmp_path / "b", codec_bundle="no-codec", fp16=True)
    for f in ("encoder.onnx", "lm_step.onnx", "audio_text.onnx", "audio_frames.onnx"):
        a, b = ((tmp_path / d / f).read_bytes() for d in ("a", "b"))
        assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest(), f
    write_checkpoints(got, tmp_path / "runs")
    ck = torch.load(tmp_path / "runs" / "lm_init.pt", weights_only=False)
    assert torch.equal(ck["model"]["eot.weight"], got["lm"].eot.weight)


def test_a_weight_missing_from_the_bundle_is_an_error(parts: dict, tmp_path: Path) -> None:
    import onnx

    from models.training.from_bundle import load_bundle

    write_bundle(parts, tmp_path / "a", codec_bundle="no-codec", fp16=False)
    path = tmp_path / "a" / "encoder.onnx"
    model = onnx.load(str(path))
    keep = [i for i in model.graph.initializer if i.name != "ctc.bias"]
    assert len(keep) == len(model.graph.initializer) - 1
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    onnx.save(model, str(path))
    with pytest.raises(ValueError, match="ctc.bias"):
        load_bundle(tmp_path / "a")


def test_stage_1_without_a_text_lm_run_takes_the_shipped_tokenizer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.training.train_fused as tf

    monkeypatch.setattr(tf, "TOKENIZER", tmp_path / "textlm" / "tokenizer.json")
    assert tf.tokenizer_path() == tf.SHIPPED_TOKENIZER
    assert tf.SHIPPED_TOKENIZER.exists()
    run_tok = tmp_path / "textlm" / "tokenizer.json"
    run_tok.parent.mkdir()
    run_tok.write_text("{}")
    assert tf.tokenizer_path() == run_tok



def test_a_sure_end_is_the_end_with_or_without_the_teacher() -> None:
    from models.training.train_fused import SURE, eot_loss

    teacher = torch.tensor([[5.0, -2.0, 0.5, 0.5]])
    sure = torch.tensor([[-1.0, 0.0, 1.0, SURE]])  # the utterance's last piece is SURE
    s = teacher.clone().requires_grad_(True)
    eot_loss(s, sure, teacher).backward()
    # the teacher's 0.62 at the last piece is pushed up to 1; the other steps follow the teacher
    assert s.grad is not None and s.grad[0, 3] < 0 and torch.allclose(s.grad[0, :3], torch.zeros(3), atol=1e-7)
    # without a teacher SURE is a label of 1
    assert torch.equal(eot_loss(teacher, sure), eot_loss(teacher, torch.tensor([[-1.0, 0.0, 1.0, 1.0]])))


@pytest.mark.parametrize("head_only", [True, False])
def test_head_only_stage3_keeps_the_text_answers(head_only: bool) -> None:
    from models.training.train_fused import eot_loss, stage3_forward, trainable

    torch.manual_seed(1)
    cfg = FusedConfig.from_name("tiny", vocab_size=40)
    model = FusedLM(LMConfig.from_name("tiny", vocab_size=40, max_seq_len=16), cfg)
    torch.nn.init.normal_(model.proj.weight, std=0.02)
    probs = torch.softmax(torch.randn(2, 6, 40), -1)
    enc = torch.randn(2, 6, cfg.enc_dim)
    tgt = torch.randint(0, 40, (2, 6))
    eot = torch.tensor([[0.0, 0.0, 1.0, -1.0, 0.0, 1.0]] * 2)
    with torch.no_grad():
        text0, eot0, _ = model(probs, enc)
    params = trainable(model, head_only)
    opt = torch.optim.SGD(params, lr=0.5)
    l_text, logit = stage3_forward(model, probs, enc, tgt, head_only)
    (l_text + eot_loss(logit, eot)).backward()
    opt.step()
    with torch.no_grad():
        text1, eot1, _ = model(probs, enc)
    assert not torch.allclose(eot0, eot1)  # the head learned either way
    assert torch.equal(text0, text1) == head_only  # the text only without --head-only
    assert (l_text.item() == 0.0) == head_only


def test_a_hidden_layer_head_goes_through_the_bundle_and_back(parts: dict, tmp_path: Path) -> None:
    from dataclasses import replace

    from models.training.from_bundle import load_bundle, write_checkpoints
    from models.training.train_fused import load_stage3

    torch.manual_seed(2)
    cfg = replace(parts["cfg"], eot_hidden=16)
    lm = FusedLM(parts["lm_cfg"], cfg).eval()
    lm.load_state_dict({k: v for k, v in parts["lm"].state_dict().items() if not k.startswith("eot.")},
                       strict=False)  # fmt: skip
    write_bundle(parts | {"cfg": cfg, "lm": lm}, tmp_path / "a", codec_bundle="no-codec", fp16=False)
    got = load_bundle(tmp_path / "a")
    assert got["cfg"].eot_hidden == 16
    want, have = lm.state_dict(), got["lm"].state_dict()
    assert want.keys() == have.keys() and all(torch.equal(want[k], have[k]) for k in want)
    # the runtime reads the hidden-layer head from lm_step like the linear one
    fm = FusedModel(tmp_path / "a")
    st = fm.new_state()
    fm.push_text(st, "what is seven plus five")
    ids = [fm.tok.special("<bos>"), fm.tok.special("<user>")] + st.user_ids
    x = torch.nn.functional.one_hot(torch.tensor([ids]), fm.vocab).float()
    with torch.no_grad():
        ref = lm(x, torch.zeros(1, len(ids), cfg.enc_dim))[1][0, -1].item()
    assert st.eot_logit == pytest.approx(ref, abs=1e-4)
    # stage 3 starts from it with its own head, or with a fresh head of another shape
    write_checkpoints(got, tmp_path / "runs")
    own, _ = load_stage3(tmp_path / "runs" / "lm_init.pt", parts["cfg"])
    assert own.eot_hidden == 16 and torch.equal(own.eot[0].weight, lm.eot[0].weight)
    lin, _ = load_stage3(tmp_path / "runs" / "lm_init.pt", parts["cfg"], eot_hidden=0)
    assert lin.eot_hidden == 0 and isinstance(lin.eot, torch.nn.Linear)
    assert torch.equal(lin.lm.tok_embeddings.weight, lm.lm.tok_embeddings.weight)


def test_bf16_autocast_runs_the_forward_in_bfloat16_and_keeps_float32_weights() -> None:
    import argparse

    from models.training.train_fused import autocast, eot_loss, parse_args, stage3_forward

    torch.manual_seed(2)
    cfg = FusedConfig.from_name("tiny", vocab_size=40)
    enc = Encoder(cfg)
    mel = torch.randn(2, 32, cfg.n_mels)
    ref, _, _ = enc(mel, enc.empty_state(2))
    with autocast(argparse.Namespace(bf16=False)):  # off: exactly the float32 forward
        off, _, _ = enc(mel, enc.empty_state(2))
    assert off.dtype == torch.float32 and torch.equal(off, ref)
    with autocast(parse_args(["encoder", "--bf16"])):
        on, _, _ = enc(mel, enc.empty_state(2))
    assert on.dtype == torch.bfloat16 and not torch.equal(on.float(), ref)
    assert torch.allclose(on.float(), ref, atol=0.1, rtol=0.05)
    # a stage-3 step: the losses come back in float32, the gradients land on float32 weights
    model = FusedLM(LMConfig.from_name("tiny", vocab_size=40, max_seq_len=16), cfg)
    probs = torch.softmax(torch.randn(2, 6, 40), -1)
    states = torch.randn(2, 6, cfg.enc_dim)
    tgt = torch.randint(0, 40, (2, 6))
    with autocast(parse_args(["lm", "--bf16"])):
        l_text, logit = stage3_forward(model, probs, states, tgt)
    assert l_text.dtype == torch.float32
    loss = l_text + eot_loss(logit.float(), torch.zeros(2, 6))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_the_text_probe_asks_held_out_questions_and_scores_the_answers() -> None:
    from types import SimpleNamespace

    from models.domain import generate_corpus, normalize
    from models.training.train_fused import text_probe_accuracy

    held = [e for e in generate_corpus(0) if e.split == "heldout"]
    tok = train_bpe([normalize(e.question) for e in held] + [e.answer for e in held], 300)
    answers = {normalize(e.question): e.answer for e in held}
    eot, asst = tok.special("<eot>"), tok.special("<assistant>")

    class Oracle(torch.nn.Module):
        """Reads the one-hot question back and says ``answers`` for it (or "um" if not ``know``)."""

        def __init__(self, know: bool) -> None:
            super().__init__()
            self.know, self.asked = know, []
            self.lm = SimpleNamespace(cfg=SimpleNamespace(vocab_size=tok.vocab_size))
            self.proj = torch.nn.Linear(4, 1)

        def forward(self, probs: torch.Tensor, encx: torch.Tensor) -> tuple:
            assert not encx.any()  # no encoder input
            ids = probs[0].argmax(-1).tolist()
            q = tok.decode(ids[2 : ids.index(eot)])
            said = ids[ids.index(asst) + 1 :]
            if not said:
                self.asked.append(q)
            want = tok.encode(answers[q] if self.know else "um") + [eot]
            logits = torch.zeros(1, len(ids), tok.vocab_size)
            logits[0, -1, want[len(said)]] = 1.0
            return logits, None, None

    good, bad = Oracle(True), Oracle(False)
    assert text_probe_accuracy(good, tok, 0, per_skill=3) == 1.0
    assert text_probe_accuracy(bad, tok, 0, per_skill=3) == 0.0
    skills = {e.skill for e in held}
    assert len(good.asked) == 3 * len(skills) and set(good.asked) <= set(answers)
    assert {next(e.skill for e in held if normalize(e.question) == q) for q in good.asked} == skills


def test_backbone_lr_scales_only_the_lm_backbone() -> None:
    from models.training.train_fused import param_groups, trainable

    model = FusedLM(LMConfig.from_name("tiny", vocab_size=40, max_seq_len=16),
                    FusedConfig.from_name("tiny", vocab_size=40))  # fmt: skip
    params = trainable(model)
    assert param_groups(model, params, 1.0) == [{"params": params}]  # as before the option
    slow, fast = param_groups(model, params, 0.1)
    assert slow["scale"] == 0.1 and fast["scale"] == 1.0
    assert {id(p) for p in slow["params"]} == {id(p) for p in model.lm.parameters()}
    assert {id(p) for p in fast["params"]} == {
        id(p) for p in [*model.proj.parameters(), *model.eot.parameters()]
    }
    # head only: just the end-of-turn head, at the full rate
    (only,) = param_groups(model, trainable(model, head_only=True), 0.1)
    assert only["scale"] == 1.0 and len(only["params"]) == len(list(model.eot.parameters()))


def test_data_seed_picks_the_speech_caches_apart_from_the_training_seed() -> None:
    from models.training.train_fused import parse_args, run_speech_paths

    same = run_speech_paths(parse_args(["encoder", "--seed", "1"]))
    assert [p.name for p in same] == ["speech_train_s1_n4000.npy", "speech_eval_s1_n480.npy"]
    apart = run_speech_paths(parse_args(["encoder", "--seed", "1", "--data-seed", "0", "--n-train", "16000"]))
    assert [p.name for p in apart] == ["speech_train_s0_n16000.npy", "speech_eval_s0_n480.npy"]


def test_stage3_text_mix_is_the_data_seeds_training_split() -> None:
    # with --seed 1 --data-seed 0 (another initialization on seed 0's speech), the text rows
    # must come from seed 0's corpus: seed 1's training split holds questions that seed 0 holds
    # out, and seed 0's held-out split is what the eval speech says
    from models.tokenizer import Tokenizer
    from models.training.train_fused import SHIPPED_TOKENIZER, parse_args, text_mix_rows

    tok = Tokenizer.load(SHIPPED_TOKENIZER)
    args = parse_args(["lm", "--seed", "1", "--data-seed", "0", "--text-mix", "0.5"])
    heard = {tok.decode(r["ids"][: r["n_q"]]).strip() for r in text_mix_rows(args, tok)}
    norm = domain.normalize
    held0 = {norm(e.question) for e in domain.generate_corpus(0) if e.split == "heldout"}
    held1 = {norm(e.question) for e in domain.generate_corpus(1) if e.split == "heldout"}
    assert heard and not heard & held0
    assert heard & held1  # the training seed's corpus would have leaked these


def test_intermediate_ctc_reads_the_first_blocks_through_the_last_layers(parts: dict) -> None:
    from models.training.train_fused import batch_ctc, encoder_logits

    enc = parts["encoder"]
    x = torch.randn(2, 32, 80)
    with torch.no_grad():
        full, _, _ = enc(x, enc.empty_state(2))
        logits, none = encoder_logits(enc, x)
        again, mid = encoder_logits(enc, x, 1)
        # by hand: input layer, then the first block alone, then the final norm and CTC layer
        h = enc.inp(((x - enc.mel_mean) / enc.mel_std).reshape(2, 8, 80 * enc.cfg.stack))
        h, _ = enc.blocks[0](h, torch.zeros(2, enc.blocks[0].pad, enc.cfg.enc_dim))
        by_hand = enc.ctc(enc.norm(h))
    assert none is None and mid is not None and not enc.blocks[0]._forward_hooks  # hook removed
    torch.testing.assert_close(logits, full)
    torch.testing.assert_close(again, full)
    torch.testing.assert_close(mid, by_hand)
    assert not torch.allclose(mid, full)
    # the loss reads each item's own frames, after its prefix: item 1 behind 2 frames of junk
    tg, il, tl = torch.tensor([3, 4, 5]), torch.tensor([6, 5]), torch.tensor([2, 1])
    plain = batch_ctc(full, [0, 0], tg, il, tl)
    junk = torch.randn(2, 2, full.shape[-1]) * 5
    shifted = torch.cat([torch.cat([full[:1], junk[:1]], 1), torch.cat([junk[1:], full[1:]], 1)])
    torch.testing.assert_close(batch_ctc(shifted, [0, 2], tg, il, tl), plain)
    assert not torch.isclose(batch_ctc(shifted, [0, 0], tg, il, tl), plain)


def test_intermediate_ctc_options_are_checked_before_training() -> None:
    from models.training.train_fused import parse_args, train_encoder

    for bad in (["--inter-ctc", "1.0"], ["--inter-ctc", "0.3", "--inter-ctc-layer", "2"]):
        with pytest.raises(SystemExit, match="--inter-ctc"):
            train_encoder(parse_args(["encoder", "--preset", "tiny", *bad]))
    with pytest.raises(SystemExit, match="--shared-prefix needs --prefix-s"):
        train_encoder(parse_args(["encoder", "--preset", "tiny", "--shared-prefix"]))


def test_a_shared_prefix_leaves_each_item_where_hearing_it_first_would(parts: dict) -> None:
    from models.training.train_fused import WARMUP, encoder_logits, encoder_run, warm_mel

    enc = parts["encoder"]
    warm = warm_mel(WARMUP, enc.cfg.stack)
    x = torch.randn(2, 32, 80)
    w = torch.from_numpy(warm.astype(np.float32))
    with torch.no_grad():
        logits, mid = encoder_logits(enc, x, 1, prefix=w)
        cold, _ = encoder_logits(enc, x)
        # the intermediate logits, by hand: the whole warm-up plus item, its own frames kept
        k = len(warm) // enc.cfg.stack
        _, by_hand = encoder_logits(enc, torch.cat([w[None].expand(2, -1, -1), x], 1), 1)
    for j in range(2):  # each item as the runtime hears it (encoder_run: warm-up, then the item)
        torch.testing.assert_close(logits[j], encoder_run(enc, x[j].numpy(), warm)[0])
    assert mid is not None and by_hand is not None
    torch.testing.assert_close(mid, by_hand[:, k:])
    assert not torch.allclose(logits[:, :4], cold[:, :4])  # the start differs from zero state
    # the warm-up pass is part of the graph: its weights get the gradient of the first frames
    enc.zero_grad()
    encoder_logits(enc, x[:, :4], prefix=w)[0].sum().backward()
    g_warm = enc.blocks[0].weight.grad.clone()
    enc.zero_grad()
    encoder_logits(enc, x[:, :4])[0].sum().backward()
    assert not torch.allclose(g_warm, enc.blocks[0].weight.grad)
    enc.zero_grad()
