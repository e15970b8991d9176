"""The LM backbone and its ONNX export (models/training/lm.py, export_lm.py), on a tiny
randomly-initialized model; and the TextLM runner on that exported bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models.bundle import BundleError  # noqa: E402
from models.runtime import RuntimeOptions, create_session  # noqa: E402
from models.textlm import OUTPUTS, ContextFull, TextLM  # noqa: E402
from models.tokenizer import train_bpe  # noqa: E402
from models.training.export_lm import parity, write_bundle  # noqa: E402
from models.training.lm import LM, LMConfig  # noqa: E402


@pytest.fixture(scope="module")
def tok():  # noqa: ANN201
    return train_bpe(["what is seven plus five", "Seven plus five is twelve."], 160)


@pytest.fixture(scope="module")
def model(tok) -> LM:  # noqa: ANN001
    torch.manual_seed(0)
    torch.set_num_threads(1)
    m = LM(LMConfig.from_name("tiny", vocab_size=tok.vocab_size, max_seq_len=48))
    with torch.no_grad():  # non-trivial norms, so a wrong path cannot hide
        for name, p in m.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return m.eval()


@pytest.fixture(scope="module")
def bundle(model: LM, tok, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    out = tmp_path_factory.mktemp("textlm")
    write_bundle(model, tok, out, max_new_tokens=12)
    return out


def test_presets() -> None:
    cfg = LMConfig.from_name("small", vocab_size=100)
    assert cfg.vocab_size == 100 and cfg.head_dim * cfg.n_heads == cfg.d_model
    assert LMConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(KeyError):
        LMConfig.from_name("huge")
    with pytest.raises(ValueError):
        LMConfig(n_heads=4, n_kv_heads=3)


@pytest.mark.parametrize("chunks", [[1] * 20, [3, 3, 3, 3, 3, 5], [7, 13], [20]])
@torch.no_grad()
def test_incremental_decode_equals_full_forward(model: LM, chunks: list[int]) -> None:
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, model.cfg.vocab_size, (2, sum(chunks)), generator=gen)
    full, cache = model(tokens)
    assert cache is None
    cache = model.empty_cache(2)
    pos, outs = 0, []
    for n in chunks:
        start = torch.full((2,), pos, dtype=torch.long)
        logits, cache = model(tokens[:, pos : pos + n], cache, start)
        outs.append(logits)
        pos += n
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_rows_decode_at_their_own_positions(model: LM) -> None:
    """A batch whose rows sit at different positions equals running the rows alone."""
    gen = torch.Generator().manual_seed(2)
    a = torch.randint(0, model.cfg.vocab_size, (1, 9), generator=gen)
    b = torch.randint(0, model.cfg.vocab_size, (1, 4), generator=gen)
    ca, cb = model.empty_cache(1), model.empty_cache(1)
    _, ca = model(a[:, :8], ca, torch.tensor([0]))
    _, cb = model(b[:, :3], cb, torch.tensor([0]))
    want_a, _ = model(a[:, 8:], ca, torch.tensor([8]))
    want_b, _ = model(b[:, 3:], cb, torch.tensor([3]))
    cache = (torch.cat([ca[0], cb[0]], 1), torch.cat([ca[1], cb[1]], 1))
    got, _ = model(torch.cat([a[:, 8:], b[:, 3:]]), cache, torch.tensor([8, 3]))
    torch.testing.assert_close(got, torch.cat([want_a, want_b]), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_embeddings_can_be_fed_directly(model: LM) -> None:
    tokens = torch.randint(0, model.cfg.vocab_size, (1, 6))
    h, _ = model.backbone(model.embed(tokens))
    torch.testing.assert_close(model.logits(h), model(tokens)[0])


def test_onnx_parity(model: LM, bundle: Path) -> None:
    assert parity(model, bundle / "lm.onnx", trials=4) <= 1e-4


@torch.no_grad()
def test_onnx_incremental_equals_torch_full(model: LM, bundle: Path) -> None:
    sess = create_session(bundle / "lm.onnx", RuntimeOptions(device="cpu"))
    tokens = torch.randint(
        0, model.cfg.vocab_size, (1, 11), generator=torch.Generator().manual_seed(3)
    )
    full = model(tokens)[0].numpy()
    ck, cv = (c.numpy() for c in model.empty_cache(1))
    outs, pos = [], 0
    for n in (4, 1, 1, 5):
        logits, ck, cv = sess.run(
            list(OUTPUTS),
            {"input_ids": tokens[:, pos : pos + n].numpy(), "start_pos": np.array([pos]),
             "cache_k": ck, "cache_v": cv},
        )  # fmt: skip
        outs.append(logits)
        pos += n
    assert np.abs(np.concatenate(outs, 1) - full).max() <= 1e-4


def test_textlm_runner(bundle: Path) -> None:
    lm = TextLM(bundle, options=RuntimeOptions(device="cpu"))
    assert lm.providers == ["CPUExecutionProvider"]
    pieces: list[str] = []
    reply = lm.generate("What's 7 plus 5?", on_token=pieces.append)
    assert "".join(pieces) == reply

    state = lm.new_state()
    lm.start_reply(state, "what is seven plus five", max_new_tokens=5)
    stepped = []
    while (piece := lm.next_piece(state)) is not None:
        stepped.append(piece)
    assert len(state.reply_ids) <= 5 and lm.next_piece(state) is None
    assert lm.generate("what is seven plus five", 5, state=state) == "".join(stepped)
    # same state, another turn: reset per turn, so the answer is independent of history
    assert lm.generate("what is seven plus five", state=state) == reply

    with pytest.raises(ValueError):
        lm.start_reply(state, "hi", max_new_tokens=0)
    state.reset()
    lm.prefill(state, [5] * 40)
    with pytest.raises(ContextFull):
        lm.prefill(state, [5] * 9)


def test_batched_steps_equal_single_sessions(bundle: Path) -> None:
    lm = TextLM(bundle, options=RuntimeOptions(device="cpu"))
    questions = ["hi", "what is seven plus five please", "count from one to three"]
    alone = [lm.generate(q, 10) for q in questions]
    states = [lm.new_state() for _ in questions]
    for s, q in zip(states, questions, strict=True):
        lm.start_reply(s, q, 10)
    while any(p is not None for p in lm.next_pieces(states)):
        pass
    assert [lm.reply_text(s) for s in states] == alone
    with pytest.raises(ValueError, match="twice"):
        lm.next_pieces([states[0], states[0]])


def test_textlm_rejects_mismatched_bundles(bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("lm.onnx", "tokenizer.json", "manifest.json"):
        (bad / name).write_bytes((bundle / name).read_bytes())
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["config"]["model"]["vocab_size"] += 1
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="vocab_size"):
        TextLM(bad)
    manifest["config"]["model"]["vocab_size"] -= 1
    manifest["config"]["model"]["max_seq_len"] = 64
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="cache_k shape"):
        TextLM(bad)
    manifest["kind"] = "codec"
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="expected a 'textlm' bundle"):
        TextLM(bad)


def test_training_batches_score_only_the_reply() -> None:
    from models.domain import generate_corpus
    from models.training.corpus import IGNORE, build_tokenizer, encode_examples, make_batch

    examples = generate_corpus(0)[:400]
    tok = build_tokenizer(examples, 300)
    encoded = encode_examples(tok, examples)
    index = np.arange(0, 400, 37)
    inputs, targets = make_batch(encoded, index, tok.special("<pad>"))
    for row, i in enumerate(index):
        e, ex = encoded[i], examples[i]
        scored = targets[row][targets[row] != IGNORE].tolist()
        assert tok.decode(scored) == ex.answer and scored[-1] == tok.special("<eot>")
        n = len(e.ids) - 1
        assert inputs[row, :n].tolist() == e.ids[:-1]
        # each scored target is the next token of the input sequence
        pos = (targets[row] != IGNORE).nonzero().flatten()
        assert pos[0] == e.n_prompt - 1 and targets[row, pos].tolist() == e.ids[e.n_prompt :]
