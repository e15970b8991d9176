"""A tiny byte-pair tokenizer over printable ASCII, with reserved special tokens.

The vocabulary is, in id order: the special tokens (:data:`SPECIALS`, padded
with ``<reserved_N>`` up to :data:`N_SPECIAL`), the 95 printable ASCII
characters, then the merged pieces learned by :func:`train_bpe`. Any text
encodes: characters outside printable ASCII become ``<unk>``. Specials are
never produced by :meth:`Tokenizer.encode` (a user cannot type ``<eot>``);
prompts place them by id via :meth:`Tokenizer.special`.

The special ids are fixed now so the fused model can reuse this vocabulary
unchanged: turn markers (``<user>``, ``<assistant>``, ``<eot>``) and audio
placeholders (``<audio>``, ``<audio_start>``, ``<audio_end>``), plus spare
``<reserved_N>`` ids.

Usage::

    tok = Tokenizer.load("bundles/textlm/tokenizer.json")
    ids = tok.encode("what is seven plus five")
    text = tok.decode(ids)
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

TOKENIZER_TYPE = "rejoinder-bpe"
TOKENIZER_VERSION = 1
SPECIALS: tuple[str, ...] = (
    "<pad>", "<bos>", "<eos>", "<unk>", "<user>", "<assistant>", "<eot>",
    "<audio>", "<audio_start>", "<audio_end>",
)  # fmt: skip
N_SPECIAL = 32  # SPECIALS plus <reserved_N> spares
ALPHABET: tuple[str, ...] = tuple(chr(c) for c in range(32, 127))
# GPT-2 style pre-tokenization: merges never cross these chunks.
PRETOKENIZE = r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+"


class TokenizerError(ValueError):
    """A tokenizer file is malformed or an unknown special token was asked for."""


def _special_names() -> list[str]:
    return list(SPECIALS) + [f"<reserved_{i}>" for i in range(N_SPECIAL - len(SPECIALS))]


class Tokenizer:
    """Encode text to ids and back; immutable once built."""

    def __init__(self, merges: Sequence[tuple[str, str]]) -> None:
        self.merges: list[tuple[str, str]] = [(a, b) for a, b in merges]
        self.pieces: list[str] = _special_names() + list(ALPHABET) + [a + b for a, b in merges]
        self._special_ids = {name: i for i, name in enumerate(self.pieces[:N_SPECIAL])}
        self._piece_ids: dict[str, int] = {}
        for i, piece in enumerate(self.pieces[N_SPECIAL:], start=N_SPECIAL):
            if piece in self._piece_ids:
                raise TokenizerError(f"duplicate piece {piece!r} (merge {i - N_SPECIAL})")
            self._piece_ids[piece] = i
        self._ranks = {pair: r for r, pair in enumerate(self.merges)}
        self._split = re.compile(PRETOKENIZE)
        self._cache: dict[str, list[int]] = {}
        self.unk_id = self._special_ids["<unk>"]

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def special(self, name: str) -> int:
        """Id of a special token by name, e.g. ``special("<eot>")``."""
        try:
            return self._special_ids[name]
        except KeyError:
            raise TokenizerError(f"unknown special token {name!r}") from None

    def is_special(self, token_id: int) -> bool:
        return 0 <= token_id < N_SPECIAL

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; special-token names in the text are encoded as plain characters."""
        out: list[int] = []
        for chunk in self._split.findall(text):
            cached = self._cache.get(chunk)
            if cached is None:
                cached = self._encode_chunk(chunk)
                if len(self._cache) < 65536:
                    self._cache[chunk] = cached
            out.extend(cached)
        return out

    def _encode_chunk(self, chunk: str) -> list[int]:
        parts = list(chunk)
        while len(parts) > 1:
            best, best_rank = -1, len(self._ranks)
            for i in range(len(parts) - 1):
                rank = self._ranks.get((parts[i], parts[i + 1]), best_rank)
                if rank < best_rank:
                    best, best_rank = i, rank
            if best < 0:
                break
            parts[best : best + 2] = [parts[best] + parts[best + 1]]
        return [self._piece_ids.get(p, self.unk_id) for p in parts]

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        """Text of ``ids``. Special tokens are dropped unless ``skip_special=False``."""
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.pieces):
                raise TokenizerError(f"token id {i} out of range (vocab {len(self.pieces)})")
            if i < N_SPECIAL and skip_special:
                continue
            out.append(self.pieces[i])
        return "".join(out)

    def to_dict(self) -> dict[str, object]:
        return {
            "type": TOKENIZER_TYPE,
            "version": TOKENIZER_VERSION,
            "specials": _special_names(),
            "alphabet": "".join(ALPHABET),
            "pretokenize": PRETOKENIZE,
            "merges": [[a, b] for a, b in self.merges],
            "vocab_size": self.vocab_size,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tokenizer:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise TokenizerError(f"{path}: cannot read tokenizer: {e}") from None
        expect = {
            "type": TOKENIZER_TYPE,
            "version": TOKENIZER_VERSION,
            "specials": _special_names(),
            "alphabet": "".join(ALPHABET),
            "pretokenize": PRETOKENIZE,
        }
        for key, want in expect.items():
            if data.get(key) != want:
                raise TokenizerError(f"{path}: {key!r} is {data.get(key)!r}, expected {want!r}")
        merges = data.get("merges")
        if not isinstance(merges, list) or not all(
            isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m)
            for m in merges
        ):
            raise TokenizerError(f"{path}: 'merges' must be a list of [left, right] pairs")
        tok = cls([(a, b) for a, b in merges])
        if data.get("vocab_size") != tok.vocab_size:
            raise TokenizerError(
                f"{path}: vocab_size {data.get('vocab_size')} != {tok.vocab_size} from merges"
            )
        return tok


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Learn merges on ``texts`` until ``vocab_size`` (or no pair occurs twice).

    Deterministic: ties between equally frequent pairs go to the
    lexicographically smallest pair.
    """
    n_merges = vocab_size - N_SPECIAL - len(ALPHABET)
    if n_merges < 0:
        raise ValueError(f"vocab_size must be >= {N_SPECIAL + len(ALPHABET)}")
    split = re.compile(PRETOKENIZE)
    words: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        for chunk in split.findall(text):
            words[tuple(chunk)] += 1
    merges: list[tuple[str, str]] = []
    known = set(ALPHABET)
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:], strict=False):
                pairs[pair] += count
        candidates = [(c, p) for p, c in pairs.items() if c >= 2 and p[0] + p[1] not in known]
        if not candidates:
            break
        top = max(c for c, _ in candidates)
        pair = min(p for c, p in candidates if c == top)
        merges.append(pair)
        known.add(pair[0] + pair[1])
        merged: Counter[tuple[str, ...]] = Counter()
        for word, count in words.items():
            merged[_merge(word, pair)] += count
        words = merged
    return Tokenizer(merges)


def _merge(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)
