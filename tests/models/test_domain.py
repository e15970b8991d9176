"""The domain facts, judging rules and the corpus split (models/domain.py)."""

from __future__ import annotations

from collections import defaultdict

import pytest

from models import domain
from models.domain import (
    CAPITALS,
    FALLBACK,
    SPELL_WORDS,
    answer_sentences,
    audio_heldout_answers,
    generate_corpus,
    key_word_hit,
    key_words_heard,
    normalize,
    number_to_words,
    question_key_words,
    text_success,
)


@pytest.fixture(scope="module")
def corpus() -> list[domain.Example]:
    return generate_corpus(0)


def test_fact_tables() -> None:
    assert len(CAPITALS) == 24 and len(set(CAPITALS.values())) == 24
    assert len(SPELL_WORDS) == 30 and len(set(SPELL_WORDS)) == 30


@pytest.mark.parametrize(
    ("n", "words"),
    [(0, "zero"), (7, "seven"), (13, "thirteen"), (20, "twenty"), (56, "fifty six"),
     (100, "one hundred"), (144, "one hundred forty four"), (1005, "one thousand five")],
)  # fmt: skip
def test_number_to_words(n: int, words: str) -> None:
    assert number_to_words(n) == words


def test_normalize() -> None:
    assert normalize("What's 7 plus 56?") == "what is seven plus fifty six"
    assert normalize("Mexico-City, please!") == "mexico city please"
    assert normalize("  Hello!  How can I help you? ") == "hello how can i help you"
    assert normalize("WHAT\u2019S up") == "what is up"


def test_text_success_and_key_word() -> None:
    assert text_success("Sure. Seven plus five is 12!", "Seven plus five is twelve.")
    assert not text_success("Seven plus five is eleven.", "Seven plus five is twelve.")
    assert not text_success("seven plus five is twelve hundred", "is twelve h")  # whole words
    assert not text_success("anything", "")
    assert key_word_hit("The capital of India is New-Delhi.", "delhi")
    assert not key_word_hit("Goodbye!", "good")


def test_key_words_are_the_question_words_its_answer_repeats() -> None:
    assert question_key_words("What's the capital of Italy?", "The capital of Italy is Rome.") == {
        "capital", "of", "italy", "the", "is"}
    assert question_key_words("how do you spell the word happy", "Happy is spelled H, A, P, P, Y.") == {"happy"}
    assert key_words_heard("hey count from 10 to thirteen um", "count from ten to thirteen",
                           "Ten, eleven, twelve, thirteen.")
    assert not key_words_heard("hey count from ten to fourteen", "count from ten to thirteen",
                               "Ten, eleven, twelve, thirteen.")
    # nothing to hear: an incomplete question's answer repeats none of it
    assert question_key_words("what is seven plus", "Sorry, I did not catch the whole question.") == set()


def test_answers_follow_the_domain_table() -> None:
    assert domain.arithmetic_answer("times", 7, 8) == "Seven times eight is fifty six."
    assert domain.arithmetic_answer("minus", 3, 3) == "Three minus three is zero."
    assert domain.capital_answer("India") == "The capital of India is New Delhi."
    assert domain.counting_answer(3, 6) == "Three, four, five, six."
    assert domain.spelling_answer("cat") == "Cat is spelled C, A, T."
    sentences = answer_sentences()
    assert sentences == sorted(set(sentences))
    # 169 + 91 + 169 arithmetic, 24 capitals, 99 counting ranges, 30 words, 8 fixed replies
    assert len(sentences) == 169 + 91 + 169 + 24 + 99 + 30 + 8


def test_corpus_is_deterministic(corpus: list[domain.Example]) -> None:
    assert generate_corpus(0) == corpus
    assert generate_corpus(1) != corpus


def test_corpus_answers_and_key_words(corpus: list[domain.Example]) -> None:
    sentences = set(answer_sentences())
    for e in corpus:
        assert e.answer in sentences
        assert e.skill in domain.SKILLS
        assert e.question == e.question.lower()
        assert key_word_hit(e.answer, e.key_word), e
    # every reply of the domain is taught
    assert {e.answer for e in corpus if e.split == "train"} == sentences


def test_every_fact_is_trained(corpus: list[domain.Example]) -> None:
    train_facts = {e.fact for e in corpus if e.split == "train"}
    assert {e.fact for e in corpus} == train_facts
    for country in CAPITALS:
        assert f"capital:{country}" in train_facts
    for word in SPELL_WORDS:
        assert f"spell:{word}" in train_facts
    for a in range(13):
        for b in range(13):
            assert f"times:{a}:{b}" in train_facts and f"plus:{a}:{b}" in train_facts


def test_heldout_combinations_are_never_trained(corpus: list[domain.Example]) -> None:
    train = [e for e in corpus if e.split == "train"]
    heldout = [e for e in corpus if e.split == "heldout"]
    assert len(heldout) > 0.05 * len(corpus)
    assert {e.split for e in corpus} == {"train", "heldout"}
    train_pairs = {(e.phrasing, e.fact) for e in train}
    assert not train_pairs & {(e.phrasing, e.fact) for e in heldout}
    train_questions = {normalize(e.question) for e in train}
    assert not train_questions & {normalize(e.question) for e in heldout}
    # held-out phrasings of fact skills are known from other facts
    fact_skills = {"addition", "subtraction", "multiplication", "capitals", "counting", "spelling"}
    train_phrasings = {e.phrasing for e in train}
    assert {e.phrasing for e in heldout if e.skill in fact_skills} <= train_phrasings
    # every skill is held out somewhere, with and without fillers
    assert {e.skill for e in heldout} == set(domain.SKILLS)
    assert {e.has_filler for e in heldout} == {True, False}


def test_one_answer_per_question(corpus: list[domain.Example]) -> None:
    answers: dict[str, set[str]] = defaultdict(set)
    for e in corpus:
        answers[normalize(e.question)].add(e.answer)
    assert all(len(a) == 1 for a in answers.values())


def test_out_of_bounds_questions_get_the_fallback(corpus: list[domain.Example]) -> None:
    by_fact = {e.fact: e.answer for e in corpus}
    assert by_fact["minus:3:5"] == FALLBACK  # A < B
    assert by_fact["plus:13:1"] == FALLBACK  # over 12
    assert by_fact["count:2:9"] == FALLBACK  # too long
    assert by_fact["count:8:3"] == FALLBACK  # reversed
    assert by_fact["minus:5:3"] == "Five minus three is two."
    assert by_fact["count:14:20"].endswith("twenty.")


def test_audio_heldout_answers() -> None:
    held = audio_heldout_answers()
    assert held == audio_heldout_answers()
    sentences = answer_sentences()
    assert held < set(sentences) and 0.05 * len(sentences) < len(held) < 0.15 * len(sentences)
    assert FALLBACK not in held
    kept_words = {w for s in sentences if s not in held for w in normalize(s).split()}
    for s in held:
        assert set(normalize(s).split()) <= kept_words, s


def test_bare_social_forms_fill_what_the_draw_left_out(corpus: list[domain.Example]) -> None:
    bare = domain.bare_social_forms(corpus)
    by_question = {domain.normalize(e.question): e for e in corpus}
    assert {"hello", "hey"} <= {e.question for e in bare}  # the draw never says them alone
    answers = {e.skill: e.answer for e in corpus if e.skill in domain._FIXED_QUESTIONS}
    for e in bare:
        assert domain.normalize(e.question) not in by_question  # never a held-out question
        assert e.split == "train" and e.answer == answers[e.skill]
    # with them, every social template said alone is trained or held out
    every = {domain.normalize(e.question) for e in corpus + bare}
    for questions in domain._FIXED_QUESTIONS.values():
        assert set(questions) <= every


def test_complete_question_follows_what_the_words_ask(corpus: list[domain.Example]) -> None:
    def done(q: str) -> bool:
        return domain.complete_question(q.split())

    for e in corpus:
        if e.split == "train":
            assert done(domain.normalize(e.question)) == (e.skill != "incomplete"), e.question
    # a trained question with another lead, or cut after a whole question
    assert done("hey please thanks") and done("how are you") and done("um bye bye")
    assert done("what is seven plus five") and not done("what is seven plus")
    assert not done("hey") and not done("hey please") and not done("can you tell me")
    assert not done("thanks a") and not done("count from one to") and not done("")
    assert domain.question_core("hey please what is is um one plus two please".split()) == (
        "what", "is", "one", "plus", "two",
    )  # fmt: skip
