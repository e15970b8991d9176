"""The committed built-in text LM bundle (bundles/textlm) answers held-out questions."""

from __future__ import annotations

from collections import defaultdict

import pytest

from models.bundle import load_manifest
from models.domain import Example, generate_corpus, split_of, text_success
from models.runtime import RuntimeOptions
from models.textlm import DEFAULT_BUNDLE, KIND, TextLM

BUNDLE_LIMIT_BYTES = 5_000_000


@pytest.fixture(scope="module")
def lm() -> TextLM:
    return TextLM(DEFAULT_BUNDLE, options=RuntimeOptions(device="cpu"))


@pytest.fixture(scope="module")
def heldout() -> list[Example]:
    seed = load_manifest(DEFAULT_BUNDLE, kind=KIND).config["training"].get("seed", 0)
    return split_of(generate_corpus(seed), "heldout")


def test_bundle_is_small_and_valid() -> None:
    bundle = load_manifest(DEFAULT_BUNDLE, kind=KIND)
    files = {*bundle.graphs.values(), *bundle.files.values(), DEFAULT_BUNDLE / "manifest.json"}
    assert sum(p.stat().st_size for p in files) <= BUNDLE_LIMIT_BYTES
    assert bundle.manifest["rebuild"]


def test_answers_heldout_questions(lm: TextLM, heldout: list[Example]) -> None:
    by_skill: dict[str, list[Example]] = defaultdict(list)
    for e in heldout:
        if len(by_skill[e.skill]) < 3:
            by_skill[e.skill].append(e)
    state = lm.new_state()
    wrong = []
    for examples in by_skill.values():
        for e in examples:
            pieces: list[str] = []
            reply = lm.generate(e.question, on_token=pieces.append, state=state)
            assert "".join(pieces) == reply
            if reply != e.answer or not text_success(reply, e.answer):
                wrong.append((e.question, reply, e.answer))
    assert not wrong, wrong
