"""The cascade's domain LM and streaming recognizer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clients.groundtruth import espeak, with_silence
from models.asr import BOS, EOS, Recognizer, build_arpa
from models.tts import ClauseSplitter


def parse_arpa(text: str) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], float]]:
    prob: dict[tuple[str, ...], float] = {}
    bow: dict[tuple[str, ...], float] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and not line.startswith("ngram"):
            gram = tuple(parts[1].split())
            prob[gram] = 10 ** float(parts[0])
            if len(parts) == 3:
                bow[gram] = 10 ** float(parts[2])
    return prob, bow


def p(prob, bow, gram: tuple[str, ...]) -> float:
    if gram in prob:
        return prob[gram]
    return bow.get(gram[:-1], 1.0) * p(prob, bow, gram[1:])


def test_arpa_distributions_sum_to_one() -> None:
    sents = ["what is two plus two", "what is two times three", "how do you spell cat", "hello"]
    prob, bow = parse_arpa(build_arpa(sents))
    vocab = sorted({g[0] for g in prob if len(g) == 1} - {BOS})
    for hist in [(BOS,), (BOS, "what"), ("what", "is"), ("is", "two"), ("spell",), ("cat",)]:
        total = sum(p(prob, bow, hist + (w,)) for w in vocab)
        assert math.isclose(total, 1.0, rel_tol=1e-3), (hist, total)
    assert EOS in vocab


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    try:
        return Recognizer()
    except FileNotFoundError as e:
        pytest.skip(str(e))


def test_incremental_feed_equals_whole_utterance(recognizer: Recognizer) -> None:
    audio = with_silence(espeak("how do you spell house"), 16000, 0.3, 0.3)
    whole = recognizer.transcribe(audio)
    s = recognizer.stream()
    s.start()
    for i in range(0, len(audio), 320):
        s.feed(audio[i : i + 320])
    chunked = s.finish()
    s.close()
    assert chunked == whole
    assert "spell" in whole.split()


def test_clause_splitter_speaks_sentences_and_long_clauses() -> None:
    sp = ClauseSplitter(min_words=4)
    out: list[str] = []
    for piece in ["house", " is", " spelled", " h,", " o,", " u,", " s,", " e."]:
        out += sp.push(piece)
    out += sp.flush()
    assert out == ["house is spelled h,", "o, u, s, e."]
    sp = ClauseSplitter()
    assert sp.push("Hello!") == ["Hello!"]
    assert sp.push(" How can") == [] and sp.flush() == ["How can"]


def test_silence_gives_no_words(recognizer: Recognizer) -> None:
    assert recognizer.transcribe(np.zeros(16000, np.float32)).strip() == ""
