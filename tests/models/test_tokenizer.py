"""The BPE tokenizer (models/tokenizer.py)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from models.domain import answer_sentences, generate_corpus, normalize
from models.tokenizer import ALPHABET, N_SPECIAL, SPECIALS, Tokenizer, TokenizerError, train_bpe


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    texts = [normalize(e.question) for e in generate_corpus(0)[:3000]] + answer_sentences()
    return train_bpe(texts, 600)


def test_specials_are_reserved(tok: Tokenizer) -> None:
    ids = [tok.special(name) for name in SPECIALS]
    assert ids == list(range(len(SPECIALS)))
    assert tok.special("<reserved_0>") == len(SPECIALS)
    assert tok.special(f"<reserved_{N_SPECIAL - len(SPECIALS) - 1}>") == N_SPECIAL - 1
    with pytest.raises(TokenizerError):
        tok.special("<nope>")
    # text never encodes to a special id, even when it spells one
    assert all(i >= N_SPECIAL for i in tok.encode("<eot><audio> <pad>"))
    assert tok.decode([tok.special("<eot>"), *tok.encode("hi")]) == "hi"
    assert tok.decode([tok.special("<eot>")], skip_special=False) == "<eot>"


def test_round_trip(tok: Tokenizer) -> None:
    rng = random.Random(0)
    texts = answer_sentences() + ["", " ", "  two  spaces ", "Digits 123 and <eot> !?"]
    texts += ["".join(rng.choice(ALPHABET) for _ in range(rng.randrange(40))) for _ in range(200)]
    for text in texts:
        assert tok.decode(tok.encode(text)) == text


def test_merges_compress_domain_text(tok: Tokenizer) -> None:
    assert tok.vocab_size > N_SPECIAL + len(ALPHABET)
    sentence = "Seven times eight is fifty six."
    assert len(tok.encode(sentence)) < len(sentence) / 2


def test_unknown_characters(tok: Tokenizer) -> None:
    ids = tok.encode("caf\u00e9\tx")  # only printable ASCII is in the alphabet
    assert ids[-3:-1] == [tok.special("<unk>")] * 2
    assert tok.decode(ids) == "cafx"


def test_save_load(tok: Tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    loaded = Tokenizer.load(path)
    assert loaded.vocab_size == tok.vocab_size and loaded.pieces == tok.pieces
    text = "what is the capital of france"
    assert loaded.encode(text) == tok.encode(text)

    data = json.loads(path.read_text())
    data["specials"] = data["specials"][::-1]
    path.write_text(json.dumps(data))
    with pytest.raises(TokenizerError, match="specials"):
        Tokenizer.load(path)


def test_training_is_deterministic() -> None:
    texts = ["the cat sat", "the cat ran", "a dog sat"] * 3
    assert train_bpe(texts, 140).merges == train_bpe(list(texts), 140).merges
