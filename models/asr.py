"""Streaming ASR for the cascade baseline: pocketsphinx with a domain n-gram LM.

A real deployer of a closed-domain assistant biases the recognizer to the
domain. We build a back-off trigram language model (absolute discounting)
from the training questions of the corpus, and restrict the dictionary to
its words. Out-of-domain questions in the corpus keep the LM open enough to
transcribe them, so the LM can still answer "sorry".

:class:`Recognizer` holds the shared model files; each session takes an
:class:`AsrStream` (its own pocketsphinx decoder), fed incrementally while
the user speaks and finalized at the endpoint. Decoders are pooled, because
creating one costs about half a second.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from pocketsphinx import Decoder, get_model_path

from streaming.audio import float32_to_pcm16

BOS, EOS = "<s>", "</s>"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT / "bundles" / "asr"


def _words(sentence: str) -> list[str]:
    return [w for w in sentence.lower().replace(",", " ").replace("?", " ").replace(".", " ").split() if w]


def build_arpa(sentences: Iterable[str], *, order: int = 3, discount: float = 0.5) -> str:
    """A back-off n-gram LM in ARPA format, with absolute discounting.

    For a history h seen c(h) times: P(w|h) = (c(h,w) - D) / c(h) for seen w;
    the freed mass D * N(h) / c(h) goes to the lower order, normalized over
    the words not seen after h (the back-off weight).
    """
    counts: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(order + 1)]
    for s in sentences:
        toks = [BOS] + _words(s) + [EOS]
        for n in range(1, order + 1):
            for i in range(len(toks) - n + 1):
                gram = tuple(toks[i : i + n])
                if n == 1 and gram == (BOS,):
                    continue
                counts[n][gram] += 1
    vocab = sorted({g[0] for g in counts[1]} | {BOS})
    total = sum(counts[1].values())
    prob: list[dict[tuple[str, ...], float]] = [{} for _ in range(order + 1)]
    # unigrams: plain relative frequency (<s> gets a tiny placeholder, never predicted)
    for w in vocab:
        prob[1][(w,)] = counts[1][(w,)] / total if w != BOS else 1e-99
    followers: list[dict[tuple[str, ...], list[str]]] = [defaultdict(list) for _ in range(order + 1)]
    hist_count: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(order + 1)]
    for n in range(2, order + 1):
        for gram, c in counts[n].items():
            followers[n][gram[:-1]].append(gram[-1])
            hist_count[n][gram[:-1]] += c
        for gram, c in counts[n].items():
            prob[n][gram] = (c - discount) / hist_count[n][gram[:-1]]
    backoff: list[dict[tuple[str, ...], float]] = [{} for _ in range(order + 1)]

    def p_lower(gram: tuple[str, ...]) -> float:
        """Back-off probability of gram's last word given its shortened history."""
        n = len(gram)
        if n == 1:
            return prob[1][gram]
        if gram in prob[n]:
            return prob[n][gram]
        return backoff[n - 1].get(gram[:-1], 1.0) * p_lower(gram[1:])

    for n in range(2, order + 1):
        for hist, ws in followers[n].items():
            left = discount * len(ws) / hist_count[n][hist]
            seen_lower = sum(p_lower(hist[1:] + (w,)) for w in ws)
            backoff[n - 1][hist] = left / max(1e-12, 1.0 - seen_lower)
    lines = ["\\data\\"]
    for n in range(1, order + 1):
        lines.append(f"ngram {n}={len(prob[n])}")
    for n in range(1, order + 1):
        lines.append("")
        lines.append(f"\\{n}-grams:")
        for gram in sorted(prob[n]):
            lp = math.log10(max(prob[n][gram], 1e-99))
            row = f"{lp:.6f}\t{' '.join(gram)}"
            if n < order:
                bo = backoff[n].get(gram)
                if bo is not None:
                    row += f"\t{math.log10(max(bo, 1e-99)):.6f}"
            lines.append(row)
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


def build_dict(words: Iterable[str]) -> str:
    """Pronunciations for ``words`` from pocketsphinx's CMU dictionary (with variants)."""
    want = set(words)
    out = []
    with open(Path(get_model_path()) / "en-us" / "cmudict-en-us.dict") as f:
        for line in f:
            head = line.split(" ", 1)[0]
            if head.split("(", 1)[0] in want:
                out.append(line.rstrip("\n"))
    missing = want - {line.split(" ", 1)[0].split("(", 1)[0] for line in out}
    if missing:
        raise ValueError(f"no pronunciation for: {sorted(missing)}")
    return "\n".join(out) + "\n"


def build(quiet: bool = False, out_dir: Path = DEFAULT_DIR, seed: int = 0) -> None:
    """``python -m models.build`` step: the domain LM and dictionary from the corpus."""
    import hashlib

    from models.domain import generate_corpus

    lm, dic, stamp = out_dir / "domain.lm", out_dir / "domain.dict", out_dir / "corpus.sha256"
    questions = [e.question for e in generate_corpus(seed) if e.split == "train"]
    digest = hashlib.sha256("\n".join(questions).encode()).hexdigest()
    if lm.is_file() and dic.is_file() and stamp.is_file() and stamp.read_text() == digest:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    lm.write_text(build_arpa(questions))
    vocab = {w for q in questions for w in _words(q)}
    dic.write_text(build_dict(vocab))
    stamp.write_text(digest)
    if not quiet:
        print(f"asr: wrote {lm} and {dic} ({len(vocab)} words, {len(questions)} sentences)")


class Recognizer:
    """Shared ASR configuration; hands out per-session :class:`AsrStream` objects."""

    def __init__(self, lm: Path | None = None, dictionary: Path | None = None) -> None:
        self.lm = lm or DEFAULT_DIR / "domain.lm"
        self.dictionary = dictionary or DEFAULT_DIR / "domain.dict"
        for p in (self.lm, self.dictionary):
            if not p.is_file():
                raise FileNotFoundError(f"{p} is missing: run `python -m models.build`")
        self._pool: list[Decoder] = []
        self._lock = threading.Lock()

    def _decoder(self) -> Decoder:
        with self._lock:
            if self._pool:
                return self._pool.pop()
        return Decoder(samprate=16000, lm=str(self.lm), dict=str(self.dictionary), loglevel="FATAL")

    def release(self, decoder: Decoder) -> None:
        with self._lock:
            self._pool.append(decoder)

    def stream(self) -> AsrStream:
        return AsrStream(self)

    def transcribe(self, audio16k: np.ndarray) -> str:
        """Whole-utterance convenience (tools, tests)."""
        s = self.stream()
        s.start()
        s.feed(audio16k)
        text = s.finish()
        s.close()
        return text


class AsrStream:
    """One session's recognizer: ``start()``, ``feed()`` chunks, ``finish() -> text``.

    Blocking calls: run them in the inference worker, not on the event loop.
    """

    def __init__(self, rec: Recognizer) -> None:
        self.rec = rec
        self.decoder: Decoder | None = None
        self.active = False
        self.samples = 0

    def start(self) -> None:
        if self.decoder is None:
            self.decoder = self.rec._decoder()
        if self.active:
            self.decoder.end_utt()
        self.decoder.start_utt()
        self.active = True
        self.samples = 0

    def feed(self, audio16k: np.ndarray) -> None:
        if not self.active or self.decoder is None or len(audio16k) == 0:
            return
        self.decoder.process_raw(float32_to_pcm16(audio16k), False, False)
        self.samples += len(audio16k)

    def partial(self) -> str:
        if self.decoder is None or not self.active:
            return ""
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def finish(self) -> str:
        if self.decoder is None or not self.active:
            return ""
        self.decoder.end_utt()
        self.active = False
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def close(self) -> None:
        if self.decoder is not None:
            if self.active:
                self.decoder.end_utt()
                self.active = False
            self.rec.release(self.decoder)
            self.decoder = None
