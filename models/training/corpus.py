"""Token sequences and batches for text LM training, built from :mod:`models.domain`.

A training sequence is one turn in the chat format of :func:`models.textlm.prompt_ids`::

    <bos> <user> question <eot> <assistant> answer <eot>

and the loss covers the answer and its closing ``<eot>`` only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from models.domain import Example, normalize
from models.textlm import prompt_ids, reply_ids
from models.tokenizer import Tokenizer, train_bpe

IGNORE = -100  # target id that the loss skips

# Share of each skill in the training stream (the corpus itself is very uneven:
# fallback questions are numerous, the fixed replies few).
SKILL_WEIGHTS: dict[str, float] = {
    "addition": 0.15, "subtraction": 0.13, "multiplication": 0.18,
    "capitals": 0.07, "counting": 0.10, "spelling": 0.09,
    "fallback": 0.14, "incomplete": 0.06,
    "greeting": 0.01, "wellbeing": 0.01, "identity": 0.01, "thanks": 0.01,
    "farewell": 0.01, "help": 0.01,
}  # fmt: skip


def build_tokenizer(examples: list[Example], vocab_size: int) -> Tokenizer:
    """BPE learned on the training questions (normalized) and answers, as often as they occur."""
    train = [e for e in examples if e.split == "train"]
    texts = [normalize(e.question) for e in train] + [e.answer for e in train]
    return train_bpe(texts, vocab_size)


@dataclass
class EncodedExample:
    ids: list[int]  # full sequence
    n_prompt: int  # tokens before the answer
    skill: str


def encode_examples(tok: Tokenizer, examples: list[Example]) -> list[EncodedExample]:
    out = []
    for e in examples:
        prompt = prompt_ids(tok, e.question)
        out.append(EncodedExample(prompt + reply_ids(tok, e.answer), len(prompt), e.skill))
    return out


def sampling_weights(encoded: list[EncodedExample]) -> np.ndarray:
    """Per-example probabilities that give each skill its :data:`SKILL_WEIGHTS` share."""
    counts = Counter(e.skill for e in encoded)
    w = np.array([SKILL_WEIGHTS[e.skill] / counts[e.skill] for e in encoded], dtype=np.float64)
    return w / w.sum()


def make_batch(
    encoded: list[EncodedExample], index: np.ndarray, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (inputs, targets), both (B, T) int64; targets are IGNORE outside answers."""
    rows = [encoded[i] for i in index]
    t = max(len(r.ids) for r in rows) - 1
    inputs = torch.full((len(rows), t), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), t), IGNORE, dtype=torch.long)
    for b, r in enumerate(rows):
        ids = torch.tensor(r.ids, dtype=torch.long)
        n = len(r.ids) - 1
        inputs[b, :n] = ids[:-1]
        # position p predicts ids[p + 1]; answers start at n_prompt
        targets[b, r.n_prompt - 1 : n] = ids[r.n_prompt :]
    return inputs, targets
