"""The built-in assistant's closed domain: facts, replies, judging and the text corpus.

Everything the built-in models must understand and say is defined here, once,
from ``../shared/BUILTIN_ASSISTANT.md``: the facts (:data:`CAPITALS`,
:data:`SPELL_WORDS`, arithmetic and counting bounds), the exact reply of every
skill, the judging rules (:func:`normalize`, :func:`text_success`,
:func:`key_word_hit`) and a deterministic question/answer corpus
(:func:`generate_corpus`) with a train/held-out split.

Replies are written in their natural written form, the form TTS speaks:
numbers as words without hyphens ("Seven times eight is fifty six."),
sentence case, and letters of a spelled word in upper case separated by
commas ("Cat is spelled C, A, T."). Questions are lower case without
punctuation, as an ASR would give them; a model sees ``normalize(question)``.

numpy-free and torch-free: the server, the tests and the training scripts all
import it.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

CAPITALS: dict[str, str] = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Portugal": "Lisbon",
    "Greece": "Athens",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Poland": "Warsaw",
    "Ireland": "Dublin",
    "Russia": "Moscow",
    "Egypt": "Cairo",
    "Kenya": "Nairobi",
    "Japan": "Tokyo",
    "China": "Beijing",
    "India": "New Delhi",
    "Thailand": "Bangkok",
    "Canada": "Ottawa",
    "Mexico": "Mexico City",
    "Brazil": "Brasilia",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Australia": "Canberra",
    "Cuba": "Havana",
}

SPELL_WORDS: list[str] = [
    "cat", "dog", "sun", "tree", "book", "fish", "bird", "milk", "home", "blue",
    "green", "house", "water", "apple", "river", "music", "happy", "light", "world",
    "table", "chair", "phone", "voice", "train", "smile", "bread", "cloud", "plant",
    "stone", "night",
]  # fmt: skip

ARITH_MAX = 12  # arithmetic operands are whole numbers 0..ARITH_MAX
COUNT_MIN, COUNT_MAX, COUNT_SPAN = 1, 20, 6  # 1 <= A < B <= 20, B - A <= 6

GREETING = "Hello! How can I help you?"
WELLBEING = "I am doing well, thank you."
IDENTITY = "I am Rejoinder, a small voice assistant."
THANKS = "You are welcome."
FAREWELL = "Goodbye!"
HELP = "I can do arithmetic, name capitals, count, and spell words."
FALLBACK = "Sorry, I can only help with arithmetic, capitals, counting, and spelling."
INCOMPLETE = "Sorry, I did not catch the whole question."

SKILLS: tuple[str, ...] = (
    "greeting", "wellbeing", "identity", "thanks", "farewell", "help",
    "addition", "subtraction", "multiplication", "capitals", "counting", "spelling",
    "fallback", "incomplete",
)  # fmt: skip

# Judging key word of the replies that do not depend on a fact.
_FIXED_KEY_WORDS = {
    "greeting": "help",
    "wellbeing": "well",
    "identity": "assistant",
    "thanks": "welcome",
    "farewell": "goodbye",
    "help": "capitals",
    "fallback": "sorry",
    "incomplete": "catch",
}

# --------------------------------------------------------------------------- numbers

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"))


def number_to_words(n: int) -> str:
    """Spell a whole number the way the assistant says it: ``144 -> "one hundred forty four"``.

    No hyphens and no "and", so the written reply equals its normalized form.
    """
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    for scale, name in _SCALES:
        if n >= scale:
            high, rest = divmod(n, scale)
            tail = "" if rest == 0 else " " + number_to_words(rest)
            return number_to_words(high) + " " + name + tail
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- judging

_WHAT_S = re.compile(r"\bwhat['\u2019]s\b")
_DIGITS = re.compile(r"\d+")
_NON_WORD = re.compile(r"[^a-z0-9]+")


def normalize(text: str) -> str:
    """Judging normalization: lower case, "what's" -> "what is", digits -> words,
    punctuation and hyphens -> spaces, single spaces, no leading/trailing space.

    This is also what the text LM is fed as the user's question.
    """
    text = _WHAT_S.sub("what is", text.lower())
    text = _DIGITS.sub(lambda m: " " + number_to_words(int(m.group())) + " ", text)
    return _NON_WORD.sub(" ", text).strip()


def text_success(reply: str, expected: str) -> bool:
    """True when the normalized reply contains the normalized expected answer (whole words)."""
    want = normalize(expected)
    return bool(want) and f" {want} " in f" {normalize(reply)} "


def key_word_hit(transcript: str, key_word: str) -> bool:
    """True when the normalized transcript contains the key word as a whole word."""
    return text_success(transcript, key_word)


def question_key_words(question: str, answer: str) -> set[str]:
    """The words of the question that its answer repeats ("capital of italy" -> capital, of,
    italy; "spell the word happy" -> happy): what a hearing must get right to be answerable."""
    return set(normalize(question).split()) & set(normalize(answer).split())


def key_words_heard(heard: str, question: str, answer: str) -> bool:
    """True when the heard text holds every key word of the question (order aside)."""
    return question_key_words(question, answer) <= set(normalize(heard).split())


def _last_word(text: str) -> str:
    return normalize(text).split()[-1]


# --------------------------------------------------------------------------- replies


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:]


def arithmetic_answer(op: str, a: int, b: int) -> str:
    """``op`` is plus, minus or times; operands must be in bounds (see :func:`in_bounds`)."""
    result = {"plus": a + b, "minus": a - b, "times": a * b}[op]
    words = (number_to_words(a), number_to_words(b), number_to_words(result))
    return _sentence(f"{words[0]} {op} {words[1]} is {words[2]}.")


def capital_answer(country: str) -> str:
    return f"The capital of {country} is {CAPITALS[country]}."


def counting_answer(a: int, b: int) -> str:
    return _sentence(", ".join(number_to_words(n) for n in range(a, b + 1)) + ".")


def spelling_answer(word: str) -> str:
    return _sentence(f"{word} is spelled {', '.join(word.upper())}.")


def arithmetic_in_bounds(op: str, a: int, b: int) -> bool:
    ok = 0 <= a <= ARITH_MAX and 0 <= b <= ARITH_MAX
    return ok and (op != "minus" or a >= b)


def counting_in_bounds(a: int, b: int) -> bool:
    return COUNT_MIN <= a < b <= COUNT_MAX and b - a <= COUNT_SPAN


_OPS = {"addition": "plus", "subtraction": "minus", "multiplication": "times"}


def _arith_facts(skill: str) -> list[tuple[int, int]]:
    r = range(ARITH_MAX + 1)
    return [(a, b) for a in r for b in r if arithmetic_in_bounds(_OPS[skill], a, b)]


def _count_facts() -> list[tuple[int, int]]:
    r = range(COUNT_MIN, COUNT_MAX + 1)
    return [(a, b) for a in r for b in r if counting_in_bounds(a, b)]


def answer_sentences() -> list[str]:
    """Every distinct complete reply the assistant can give, sorted."""
    out = {GREETING, WELLBEING, IDENTITY, THANKS, FAREWELL, HELP, FALLBACK, INCOMPLETE}
    for skill, op in _OPS.items():
        out.update(arithmetic_answer(op, a, b) for a, b in _arith_facts(skill))
    out.update(capital_answer(c) for c in CAPITALS)
    out.update(counting_answer(a, b) for a, b in _count_facts())
    out.update(spelling_answer(w) for w in SPELL_WORDS)
    return sorted(out)


def _stable_unit(key: str) -> float:
    """A deterministic number in [0, 1) for ``key`` (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def audio_heldout_answers(fraction: float = 0.1) -> set[str]:
    """Complete replies kept out of the fused model's audio targets.

    A deterministic subset of the fact-dependent replies (about ``fraction`` of
    them). Every word of a held-out reply is still spoken in some reply that is
    not held out, so the model composes known words rather than inventing audio.
    The fixed replies (greeting, fallback, ...) are never held out.
    """
    fixed = {GREETING, WELLBEING, IDENTITY, THANKS, FAREWELL, HELP, FALLBACK, INCOMPLETE}
    sentences = [s for s in answer_sentences() if s not in fixed]
    candidates = sorted(sentences, key=lambda s: _stable_unit("audio-heldout:" + s))
    want = round(fraction * len(sentences))
    kept_words: dict[str, int] = {}
    for s in sentences:
        for w in normalize(s).split():
            kept_words[w] = kept_words.get(w, 0) + 1
    held: set[str] = set()
    for s in candidates:
        if len(held) >= want:
            break
        words = normalize(s).split()
        # Every word must remain in at least one reply that stays in training.
        if all(kept_words[w] > words.count(w) for w in set(words)):
            held.add(s)
            for w in words:
                kept_words[w] -= 1
    return held


# --------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Example:
    """One question/answer pair.

    ``phrasing`` is the normalized question template (``{a}``, ``{x}`` ... for
    the fact) and ``fact`` a stable fact key such as ``"times:7:8"``; the split
    holds out (phrasing, fact) combinations, never facts.
    """

    question: str
    answer: str
    skill: str
    key_word: str
    split: str  # "train" or "heldout"
    has_filler: bool
    phrasing: str
    fact: str


# Surface variations the domain doc names. Prefixes and suffixes combine with
# every question template; fillers are inserted afterwards.
_PREFIXES = ("", "please ", "hey ", "hey please ")
_ASK_PREFIXES = ("can you tell me ", "hey can you tell me ")  # only before a wh-question
_ASKS = ("what", "how", "which", "who", "{a} ")
_SUFFIXES = ("", " please")
_FILLERS = ("um", "uh")
# Words the corpus may add after a complete question: a question is complete before them.
TRAILING_FILLERS = frozenset(("please", *_FILLERS))


def core_length(words: list[str]) -> int:
    """How many of a question's ``words`` come before the fillers at its end."""
    k = len(words)
    while k > 0 and words[k - 1] in TRAILING_FILLERS:
        k -= 1
    return k

# Words a question may start with before what it asks ("hey please what is ..."); said
# alone they ask nothing (a lone "hey" greets, but cannot be told from the prefix).
_LEADS = (
    ("hey", "can", "you", "tell", "me"), ("can", "you", "tell", "me"), ("hey", "please"),
    ("hey",), ("please",),
)  # fmt: skip


def question_core(words: list[str]) -> tuple[str, ...]:
    """What a question asks: its ``words`` without "um"/"uh", repeated words, the fillers at
    its end and the leading "hey", "please" and "can you tell me" (the corpus combines those
    with every template)."""
    out: list[str] = []
    for w in words:
        if w not in _FILLERS and (not out or out[-1] != w):
            out.append(w)
    out = out[: core_length(out)]
    while True:
        lead = next((x for x in _LEADS if tuple(out[: len(x)]) == x and len(out) > len(x)), None)
        if lead is None:
            return tuple(out)
        out = out[len(lead) :]


def complete_question(words: list[str], seed: int = 0,
                      heard_as: dict[str, str] | None = None) -> bool:  # fmt: skip
    """True when ``words`` (normalized) ask a whole question of the domain: their
    :func:`question_core` is that of a complete training question ("hey thanks" asks what
    "thanks" asks, though the corpus may go on with "a lot"). Built from the train split
    only, so held-out phrasings add nothing; a lone lead word ("hey") is never complete.
    ``heard_as`` reads a last word as another (``{"thank": "thanks"}``: a user who stops
    after "thank" has thanked, and on unseen voices a final "thanks" is often heard so)."""
    core = question_core(words)
    if heard_as and core and core[-1] in heard_as:
        core = core[:-1] + (heard_as[core[-1]],)
    return bool(core) and core not in _LEADS and core in _complete_cores(seed)


@functools.lru_cache(maxsize=2)
def _complete_cores(seed: int) -> frozenset[tuple[str, ...]]:
    corpus = generate_corpus(seed)
    return frozenset(
        question_core(normalize(e.question).split())
        for e in corpus + bare_social_forms(corpus)
        if e.split == "train" and e.skill != "incomplete"
    )


_ARITH_TEMPLATES = ("what is {a} {op} {b}", "how much is {a} {op} {b}", "{a} {op} {b}")
_CAPITAL_TEMPLATES = (
    "what is the capital of {x}",
    "capital of {x}",
    "name the capital of {x}",
    "which city is the capital of {x}",
)
_COUNT_TEMPLATES = (
    "count from {a} to {b}",
    "can you count from {a} to {b}",
    "count {a} to {b}",
    "please count from {a} to {b}",
)
_SPELL_TEMPLATES = (
    "how do you spell {x}",
    "spell {x}",
    "spell the word {x}",
    "how do you spell the word {x}",
    "can you spell {x}",
    "how is {x} spelled",
)
_FIXED_QUESTIONS: dict[str, tuple[str, ...]] = {
    "greeting": ("hello", "hi", "hey there", "good morning", "hello there", "hi there"),
    "wellbeing": ("how are you", "how are you doing", "how are you today", "hi how are you"),
    "identity": ("what is your name", "who are you", "tell me your name", "what are you"),
    "thanks": ("thank you", "thanks", "thank you very much", "thanks a lot"),
    "farewell": ("goodbye", "bye", "bye bye", "goodbye for now"),
    "help": ("what can you do", "what can you help me with", "what can you do for me"),
}
# Out-of-domain questions (answered with FALLBACK).
_OOD_QUESTIONS = (
    "what is the weather today", "tell me a joke", "what time is it", "play some music",
    "who won the game last night", "what is the meaning of life", "set a timer",
    "turn on the lights", "what day is it", "how old are you", "where do you live",
    "do you like pizza", "what is your favorite color", "sing me a song",
    "what is the population of france", "translate hello into french",
    "who is the president", "book a table for two", "what is the square root of nine",
    "what is seven divided by two", "how far is the moon", "call my mom",
    "what is the speed of light", "tell me a story", "open the door",
    "what is the news", "can you dance", "what should i eat for dinner",
    "recommend a movie", "how tall is mount everest", "what is love",
    "what is the largest country", "who wrote hamlet", "remind me to buy milk",
    "how do i cook rice", "what is a black hole",
)  # fmt: skip
_OOD_COUNTRIES = (
    "atlantis", "narnia", "germany and france", "the moon", "mars", "texas", "london",
    "europe", "africa", "california", "the ocean", "my house",
)  # fmt: skip
_OOD_WORDS = (
    "elephant", "rhythm", "necessary", "banana", "giraffe", "computer", "yesterday",
    "beautiful", "orange", "window", "pencil", "garden", "kitchen", "bicycle", "doctor",
    "purple", "summer", "winter", "mountain", "chocolate", "library", "rejoinder",
)  # fmt: skip
_OUT_OF_RANGE = (13, 14, 15, 16, 17, 18, 19, 20, 25, 30, 40, 50, 99, 100)


def _num(n: int) -> str:
    return number_to_words(n)


@dataclass(frozen=True)
class _Fact:
    skill: str
    key: str
    answer: str
    key_word: str
    slots: dict[str, str]
    templates: tuple[str, ...]


def _facts() -> Iterator[_Fact]:
    """Every fact of the domain (in-domain and fallback), with its templates."""
    for skill, questions in _FIXED_QUESTIONS.items():
        answer = {
            "greeting": GREETING, "wellbeing": WELLBEING, "identity": IDENTITY,
            "thanks": THANKS, "farewell": FAREWELL, "help": HELP,
        }[skill]  # fmt: skip
        yield _Fact(skill, skill, answer, _FIXED_KEY_WORDS[skill], {}, questions)
    for skill, op in _OPS.items():
        for a, b in _arith_facts(skill):
            ans = arithmetic_answer(op, a, b)
            slots = {"a": _num(a), "b": _num(b), "op": op}
            yield _Fact(skill, f"{op}:{a}:{b}", ans, _last_word(ans), slots, _ARITH_TEMPLATES)
    for country, city in CAPITALS.items():
        slots = {"x": normalize(country)}
        yield _Fact(
            "capitals", f"capital:{country}", capital_answer(country), _last_word(city),
            slots, _CAPITAL_TEMPLATES,
        )  # fmt: skip
    for a, b in _count_facts():
        slots = {"a": _num(a), "b": _num(b)}
        yield _Fact(
            "counting", f"count:{a}:{b}", counting_answer(a, b), _num(b).split()[-1],
            slots, _COUNT_TEMPLATES,
        )  # fmt: skip
    for word in SPELL_WORDS:
        yield _Fact(
            "spelling", f"spell:{word}", spelling_answer(word), word, {"x": word},
            _SPELL_TEMPLATES,
        )  # fmt: skip
    yield from _fallback_facts()
    yield from _incomplete_facts()


def _fallback_facts() -> Iterator[_Fact]:
    kw = _FIXED_KEY_WORDS["fallback"]

    def fact(key: str, slots: dict[str, str], templates: tuple[str, ...]) -> _Fact:
        return _Fact("fallback", key, FALLBACK, kw, slots, templates)

    for i, q in enumerate(_OOD_QUESTIONS):
        yield fact(f"ood:{i}", {}, (q,))
    # Arithmetic with an operand over the bound, and subtraction with A < B.
    for op in ("plus", "minus", "times"):
        for big in _OUT_OF_RANGE:
            for small in (0, 1, 3, 5, 7, 9, 12):
                for a, b in ((big, small), (small, big)):
                    slots = {"a": _num(a), "b": _num(b), "op": op}
                    yield fact(f"{op}:{a}:{b}", slots, _ARITH_TEMPLATES)
    for a in range(ARITH_MAX + 1):
        for b in range(a + 1, ARITH_MAX + 1):
            slots = {"a": _num(a), "b": _num(b), "op": "minus"}
            yield fact(f"minus:{a}:{b}", slots, _ARITH_TEMPLATES)
    # Counting ranges that are too long, reversed, empty or out of bounds.
    for a in range(0, 26):
        for b in range(0, 26):
            if not counting_in_bounds(a, b) and abs(a - b) <= 12 and (a, b) != (0, 0):
                slots = {"a": _num(a), "b": _num(b)}
                yield fact(f"count:{a}:{b}", slots, _COUNT_TEMPLATES)
    for country in _OOD_COUNTRIES:
        yield fact(f"capital:{country}", {"x": country}, _CAPITAL_TEMPLATES)
    for word in _OOD_WORDS:
        yield fact(f"spell:{word}", {"x": word}, _SPELL_TEMPLATES)


def _incomplete_facts() -> Iterator[_Fact]:
    """Questions cut off at a pause point: the assistant did not hear the whole question."""
    kw = _FIXED_KEY_WORDS["incomplete"]

    def fact(key: str, slots: dict[str, str], templates: tuple[str, ...]) -> _Fact:
        return _Fact("incomplete", key, INCOMPLETE, kw, slots, templates)

    yield fact("cut:bare", {}, ("what is", "can you tell me", "how do you spell", "spell"))
    yield fact("cut:of", {}, ("what is the capital of", "capital of", "name the capital of"))
    yield fact("cut:count", {}, ("count from", "can you count from", "count"))
    for op in ("plus", "minus", "times"):
        for a in range(ARITH_MAX + 1):
            slots = {"a": _num(a), "op": op}
            yield fact(f"cut:{op}:{a}", slots, ("what is {a} {op}", "how much is {a} {op}"))
    for a in range(ARITH_MAX + 1):
        yield fact(f"cut:num:{a}", {"a": _num(a)}, ("what is {a}",))
    for a in range(COUNT_MIN, COUNT_MAX + 1):
        slots = {"a": _num(a)}
        templates = ("count from {a} to", "count from {a}", "can you count from {a} to")
        yield fact(f"cut:count:{a}", slots, templates)


# Examples drawn per fact, by skill: (phrasings per fact, filler variants per phrasing).
_DRAWS = {
    "greeting": (40, 3), "wellbeing": (40, 3), "identity": (40, 3), "thanks": (40, 3),
    "farewell": (40, 3), "help": (36, 3), "addition": (8, 1), "subtraction": (10, 1),
    "multiplication": (8, 1), "capitals": (24, 2), "counting": (12, 1), "spelling": (24, 2),
    "fallback": (4, 1), "incomplete": (6, 2),
}  # fmt: skip
HELDOUT_FRACTION = 0.12


def _phrasings(templates: tuple[str, ...]) -> list[str]:
    out = []
    for t in templates:
        prefixes = _PREFIXES + (_ASK_PREFIXES if t.startswith(_ASKS) else ())
        for p in prefixes:
            for s in _SUFFIXES:
                if p + t + s not in out:  # "please " + "count ..." == "please count ..."
                    out.append(p + t + s)
    return out


def _add_filler(words: list[str], rng: random.Random) -> list[str]:
    """Insert "um"/"uh" or repeat a word, at a random word boundary."""
    if rng.random() < 0.6:
        i = rng.randrange(len(words) + 1)
        return words[:i] + [rng.choice(_FILLERS)] + words[i:]
    i = rng.randrange(len(words))
    return words[: i + 1] + words[i:]


def _surface(question: str, rng: random.Random) -> str:
    """ASR-like variation that normalizes away: "what is" -> "what's"."""
    if "what is" in question and rng.random() < 0.35:
        return question.replace("what is", "what's", 1)
    return question


def generate_corpus(seed: int = 0) -> list[Example]:
    """Build the question/answer corpus, deterministic for ``seed``.

    For each fact, a few phrasings (template x prefix x suffix) are drawn, and
    each gets one or more variants (plain, or with a filler or a repeated
    word). About :data:`HELDOUT_FRACTION` of the (phrasing, fact) combinations
    go to ``"heldout"`` with all their variants; every fact keeps most of its
    phrasings in ``"train"``, and no normalized held-out question occurs in train.
    """
    rng = random.Random(seed)
    examples: list[Example] = []
    seen: dict[str, str] = {}
    for fact in _facts():
        n_phrasings, n_variants = _DRAWS[fact.skill]
        candidates = _phrasings(fact.templates)
        chosen = rng.sample(candidates, min(n_phrasings, len(candidates)))
        n_held = 0
        max_held = (len(chosen) - 1) // 2  # the fact always keeps a train majority
        for i, phrasing in enumerate(chosen):
            held = (
                i > 0  # the first drawn phrasing is always trained
                and n_held < max_held
                and _stable_unit(f"{seed}:{fact.key}:{phrasing}") < HELDOUT_FRACTION
            )
            n_held += held
            base = phrasing.format(**fact.slots)
            for v in range(n_variants):
                filler = v > 0 or (n_variants == 1 and rng.random() < 0.3)
                words = base.split()
                if filler:
                    words = _add_filler(words, rng)
                question = _surface(" ".join(words), rng)
                key = normalize(question)
                if key in seen:
                    if seen[key] != fact.answer:
                        raise AssertionError(f"corpus: {key!r} has two answers")
                    continue
                seen[key] = fact.answer
                examples.append(
                    Example(
                        question=question,
                        answer=fact.answer,
                        skill=fact.skill,
                        key_word=fact.key_word,
                        split="heldout" if held else "train",
                        has_filler=filler,
                        phrasing=phrasing,
                        fact=fact.key,
                    )
                )
    return examples


_BARE_GREETINGS = ("hey",)  # a prefix elsewhere; said alone it greets


def bare_social_forms(examples: Iterable[Example]) -> list[Example]:
    """The social questions said alone ("hello") that the corpus draw left out of both
    splits, and "hey" alone as a greeting, as train examples. A model trained only on
    the corpus never saw bare "hello" (its draws are "hello there", "hey hello
    please"...), and answered a lone "hey" (how "hi" and "hello" are often heard)
    with "Goodbye!". Kept apart from :func:`generate_corpus` so its splits, and every
    cache planned from them, stay as they are; a held-out bare form stays held out."""
    seen = {normalize(e.question) for e in examples}
    out = []
    for fact in _facts():
        if fact.skill not in _FIXED_QUESTIONS:
            continue
        extra = _BARE_GREETINGS if fact.skill == "greeting" else ()
        for q in fact.templates + extra:
            if normalize(q) not in seen:
                out.append(Example(q, fact.answer, fact.skill, fact.key_word, "train", False, q, fact.key))
    return out


def lone_social_examples(examples: list[Example]) -> list[Example]:
    """Social questions said alone ("hi", "hello", "hey", "thanks"...) that may be trained:
    the corpus's own train examples of them plus :func:`bare_social_forms`."""
    alone = {q for qs in _FIXED_QUESTIONS.values() for q in qs} | set(_BARE_GREETINGS)
    pool = [e for e in examples if e.split == "train" and normalize(e.question) in alone]
    return pool + bare_social_forms(examples)


def split_of(examples: Iterable[Example], split: str) -> list[Example]:
    return [e for e in examples if e.split == split]
