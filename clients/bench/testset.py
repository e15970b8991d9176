"""Benchmark test sets: deterministic speech cases with their ground truth, cached.

A test set is a list of :class:`Case` plus their audio (16 kHz float32),
built from the held-out split of :func:`models.domain.generate_corpus`
(corpus seed :data:`CORPUS_SEED`, the one training uses) by
:func:`build_testset`, which caches it under ``data/bench/<key>/`` (gitignored)
so later runs reuse the exact same audio::

    ts = load_or_build(seed=0, n_cases=40, kinds=("normal", "pause", "bargein", "noisy"))
    for case in ts.cases:
        audio = ts.audio(case.id)        # what the client sends
        case.speech_end                  # ground truth, samples at case.rate

Kinds (../shared/LATENCY.md):
- ``normal``: one in-domain question.
- ``pause``: the question split at a word boundary into two separately
  synthesized halves with 300-700 ms of silence between them
  ("what is seven plus ... five"); ``pauses`` holds the silence.
- ``bargein``: a question; once ``barge_after_ms`` of the reply has played,
  the user says ``barge_audio``: another question (``barge_kind="speech"``, it
  must stop the reply) or, for every third case, a short "mm hmm", a cough or
  a noise burst (it must not: a stop there is a false barge-in).
- ``noisy``: a normal question with white, pink or hum noise mixed in at
  8-20 dB SNR *after* the ground truth was taken from the clean source.

Voices: held out from training. :func:`heldout_voices` takes the espeak-ng
voices that ``models.training.speech_data`` holds out (``HELDOUT_VOICES``, or
its ``eval_voices()``: families en-gb-scotland and en-029, variants f4, m7,
Annie and edward), each at a fixed speed and pitch, plus :data:`JOE_HELDOUT`:
the joe voice is trained on, so only its synthesis setting is held out
(length 1.4, noise 0, noise-w 0, outside training's ranges). Without
speech_data it uses :data:`DEFAULT_VOICES`. flite's kal voices and festival are
never used: they are reserved for independent evaluation
(../shared/BUILTIN_ASSISTANT.md); no flite voice is used at all.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import random
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from clients.groundtruth import espeak, speech_bounds
from models.domain import Example, generate_corpus, split_of
from streaming.audio import resample

FORMAT_VERSION = 1
CORPUS_SEED = 0  # the corpus seed of training: its held-out split is ours
RATE = 16000
LEAD_S = 0.5  # >= 300 ms of leading silence (LATENCY.md)
TAIL_S = 0.3
NOISE_TAIL_S = 0.8  # a noisy microphone keeps hissing after the question
PAUSE_MS = (300, 700)
BARGE_AFTER_MS = (300, 800)
SNR_DB = (8.0, 20.0)
KINDS = ("normal", "pause", "bargein", "noisy")
FALSE_BARGE_KINDS = ("mm-hmm", "cough", "noise")
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = ROOT / "data" / "bench"
# Skills whose questions are in the domain proper (not "anything else" nor cut off).
IN_DOMAIN = ("greeting", "wellbeing", "identity", "thanks", "farewell", "help",
             "addition", "subtraction", "multiplication", "capitals", "counting", "spelling")  # fmt: skip
PAUSABLE = ("addition", "subtraction", "multiplication", "capitals", "counting", "spelling")
FORBIDDEN_ENGINES = ("flite", "festival")  # reserved for independent evaluation


# ---------------------------------------------------------------- voices
@dataclass(frozen=True)
class Voice:
    """A synthetic speaker. ``engine``: ``espeak`` (espeak-ng voice+variant) or ``joe`` (piper)."""

    name: str
    engine: str
    voice: str = "en-us"
    speed: int = 160
    pitch: int = 50
    length_scale: float = 1.0
    noise_scale: float = 0.0
    noise_w_scale: float = 0.0

    def __post_init__(self) -> None:
        if self.engine not in ("espeak", "joe"):
            raise ValueError(f"voice {self.name}: engine must be espeak or joe, not {self.engine!r}")

    def synthesize(self, text: str) -> np.ndarray:
        """``text`` spoken by this voice, float32 mono at :data:`RATE`."""
        if self.engine == "espeak":
            return espeak(text, voice=self.voice, speed=self.speed, pitch=self.pitch, rate=RATE)
        return _joe(text, self.length_scale, self.noise_scale, self.noise_w_scale)


# The joe voice is a training voice: its held-out part is the synthesis setting.
# Training draws length 0.8-1.3, noise 0.3-0.9, noise-w 0.4-1.1; these lie outside.
JOE_HELDOUT = Voice("joe-slow-flat", "joe", length_scale=1.4, noise_scale=0.0, noise_w_scale=0.0)
# Used when models.training.speech_data names no held-out voices: its held-out
# espeak-ng families (en-gb-scotland, en-029) and variants (f4, m7, Annie, edward).
DEFAULT_VOICES: tuple[Voice, ...] = (
    Voice("espeak-en-gb-scotland+m7", "espeak", "en-gb-scotland+m7", speed=150, pitch=40),
    Voice("espeak-en-029+f4", "espeak", "en-029+f4", speed=170, pitch=65),
    Voice("espeak-en-us+Annie", "espeak", "en-us+Annie", speed=140, pitch=55),
    JOE_HELDOUT,
)


def stable_int(key: str, lo: int, hi: int) -> int:
    """An integer in [lo, hi] fixed by ``key`` (the same in every run)."""
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")
    return lo + h % (hi - lo + 1)


def _voice_from(spec: Any) -> Voice | None:
    """A :class:`Voice` from a speech_data entry (an object or dict with ``engine`` and ``name``).

    Only espeak-ng and joe voices are used here; flite and festival entries are skipped.
    """
    if isinstance(spec, Voice):
        return spec
    get = spec.get if isinstance(spec, dict) else (lambda k, d=None: getattr(spec, k, d))
    engine = str(get("engine", "")).replace("espeak-ng", "espeak")
    if any(bad in engine for bad in FORBIDDEN_ENGINES) or engine != "espeak":
        return None
    name = str(get("voice", None) or get("name", ""))
    if not name:
        return None
    # Fixed, per-voice speed and pitch in the middle of training's ranges.
    return Voice(f"espeak-{name}", "espeak", name, speed=stable_int(name + ":s", 140, 180), pitch=stable_int(name + ":p", 35, 65))


def heldout_voices() -> tuple[tuple[Voice, ...], str]:
    """(voices, where they come from): training's held-out espeak-ng voices plus :data:`JOE_HELDOUT`.

    Reads ``models.training.speech_data`` (``HELDOUT_VOICES``, else
    ``eval_voices()``); falls back to :data:`DEFAULT_VOICES` when it is absent.
    """
    try:
        speech_data = importlib.import_module("models.training.speech_data")
    except Exception:  # noqa: BLE001 - absent, or it needs torch: use our own list
        return DEFAULT_VOICES, "clients.bench.testset.DEFAULT_VOICES"
    specs = getattr(speech_data, "HELDOUT_VOICES", None)
    where = "HELDOUT_VOICES"
    if specs is None and callable(getattr(speech_data, "eval_voices", None)):
        specs, where = speech_data.eval_voices(), "eval_voices()"
    voices = [v for v in (_voice_from(s) for s in specs or ()) if v is not None]
    if not voices:
        return DEFAULT_VOICES, "clients.bench.testset.DEFAULT_VOICES (speech_data names no espeak-ng held-out voices)"
    return (*voices, JOE_HELDOUT), f"models.training.speech_data.{where} (espeak-ng ones) + joe at held-out scales"


@cache
def _joe_voice() -> Any:
    from piper import PiperVoice

    from models.tts import joe_voice_path

    return PiperVoice.load(joe_voice_path())


def _joe(text: str, length_scale: float, noise_scale: float, noise_w_scale: float) -> np.ndarray:
    from piper import SynthesisConfig

    voice = _joe_voice()
    cfg = SynthesisConfig(length_scale=length_scale, noise_scale=noise_scale, noise_w_scale=noise_w_scale)
    parts = [c.audio_float_array.astype(np.float32) for c in voice.synthesize(text, syn_config=cfg)]
    x = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    sr = int(voice.config.sample_rate)
    return resample(x, sr, RATE).astype(np.float32) if sr != RATE else x


# ---------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """One benchmark case and its ground truth (sample indices at ``rate``, in ``audio``)."""

    id: str
    kind: str  # normal | pause | bargein | noisy
    voice: str
    question: str
    answer: str
    key_word: str
    skill: str
    rate: int
    speech_start: int  # first sample of the first 10 ms window above -40 dBFS, clean source
    speech_end: int  # one past the last sample of the last such window, clean source
    pauses: tuple[tuple[int, int], ...] = ()  # silences inserted inside the question
    noise: str | None = None  # "white" | "pink" | "hum"
    snr_db: float | None = None
    barge_kind: str | None = None  # "speech" (must interrupt) | "mm-hmm" | "cough" | "noise"
    barge_after_ms: float | None = None  # reply audio played before the barge-in starts
    barge_question: str | None = None
    barge_answer: str | None = None
    barge_key_word: str | None = None
    barge_start: int | None = None  # ground truth of the barge-in clip
    barge_end: int | None = None

    @property
    def false_barge(self) -> bool:
        """A barge-in that should not stop the reply (a backchannel, a cough, noise)."""
        return self.barge_kind is not None and self.barge_kind != "speech"

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Case:
        d = dict(d)
        d["pauses"] = tuple(tuple(p) for p in d.get("pauses", ()))
        return Case(**d)


@dataclass
class TestSet:
    """Cases and their audio; ``path`` is the cache directory it lives in."""

    __test__ = False  # not a pytest class

    cases: list[Case]
    path: Path
    key: str
    meta: dict[str, Any] = field(default_factory=dict)
    _audio: dict[str, np.ndarray] | None = field(default=None, repr=False)

    def _load(self) -> dict[str, np.ndarray]:
        if self._audio is None:
            with np.load(self.path / "audio.npz") as z:
                self._audio = {k: z[k].astype(np.float32) for k in z.files}
        return self._audio

    def audio(self, case_id: str) -> np.ndarray:
        return self._load()[case_id]

    def barge_audio(self, case_id: str) -> np.ndarray | None:
        return self._load().get(case_id + ".barge")


def testset_key(seed: int, n_cases: int, kinds: Sequence[str], voices: Sequence[Voice]) -> str:
    spec = {
        "format": FORMAT_VERSION,
        "corpus_seed": CORPUS_SEED,
        "seed": seed,
        "n": n_cases,
        "kinds": list(kinds),
        "voices": [asdict(v) for v in voices],
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def _pool(kind_skills: Iterable[str]) -> list[Example]:
    skills = set(kind_skills)
    return [e for e in split_of(generate_corpus(CORPUS_SEED), "heldout") if e.skill in skills]


def pause_split(ex: Example) -> int:
    """Word index where a pause goes: before the missing part of the question.

    "what is seven plus | five", "count from three | to eight",
    "what is the capital of | france", "how do you spell | house".
    """
    words = ex.question.split()
    at = len(words) // 2
    if ex.skill in ("addition", "subtraction", "multiplication"):
        ops = [i for i, w in enumerate(words) if w in ("plus", "minus", "times")]
        at = ops[-1] + 1 if ops else at
    elif ex.skill == "counting" and "to" in words:
        at = len(words) - 1 - words[::-1].index("to")
    elif ex.skill == "capitals" and "of" in words:
        at = words.index("of") + 1
    elif ex.skill == "spelling":
        word = ex.fact.split(":", 1)[1]
        at = words.index(word) if word in words else at
    return min(max(at, 1), len(words) - 1)


def _trim(x: np.ndarray, *, head: bool, tail: bool) -> np.ndarray:
    start, end = speech_bounds(x, RATE)
    return x[start if head else 0 : end if tail else len(x)]


def _pad(x: np.ndarray, lead_s: float, tail_s: float) -> np.ndarray:
    return np.concatenate([np.zeros(round(lead_s * RATE), np.float32), x, np.zeros(round(tail_s * RATE), np.float32)])


def _noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise: ``white``, ``pink`` (1/f) or ``hum`` (50 Hz and harmonics over hiss)."""
    if kind == "white":
        x = rng.standard_normal(n)
    elif kind == "pink":
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.arange(len(spec), dtype=np.float64)
        f[0] = 1.0
        x = np.fft.irfft(spec / np.sqrt(f), n)
    else:
        t = np.arange(n) / RATE
        x = 0.3 * rng.standard_normal(n)
        for h in (1, 2, 3, 5):
            x += np.sin(2 * np.pi * 50 * h * t + rng.uniform(0, 2 * np.pi)) / h
    x = np.asarray(x, np.float64)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def mix_noise(clean: np.ndarray, start: int, end: int, kind: str, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``clean`` plus noise at ``snr_db`` relative to the speech RMS over ``[start, end)``."""
    speech_rms = float(np.sqrt(np.mean(clean[start:end].astype(np.float64) ** 2)))
    noise = _noise(kind, len(clean), rng) * speech_rms / 10 ** (snr_db / 20)
    return np.clip(clean + noise, -1.0, 1.0).astype(np.float32)


def _false_barge_audio(kind: str, voice: Voice, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A short sound that is not a turn: "mm hmm", a cough or a noise burst (with lead/tail)."""
    if kind == "mm-hmm":
        v = voice if voice.engine == "espeak" else Voice("espeak-en-us", "espeak")
        return _pad(v.synthesize("mm hmm"), 0.1, 0.3), "mm hmm"
    n = round((0.18 if kind == "cough" else 0.3) * RATE)
    env = np.exp(-np.arange(n) / (0.05 * RATE)) if kind == "cough" else np.hanning(n)
    burst = _noise("white" if kind == "cough" else "pink", n, rng) * env
    burst = np.convolve(burst, np.ones(8) / 8, mode="same")  # duller, cough-like
    burst *= (0.3 if kind == "cough" else 0.05) / (np.max(np.abs(burst)) + 1e-12)
    return _pad(burst.astype(np.float32), 0.1, 0.3), f"({kind})"


def generate_cases(
    seed: int,
    n_cases: int,
    kinds: Sequence[str] = KINDS,
    voices: Sequence[Voice] = DEFAULT_VOICES,
    progress: Callable[[int, str], None] | None = None,
) -> tuple[list[Case], dict[str, np.ndarray]]:
    """Synthesize the cases (deterministic for the arguments). ``progress(n, note)`` after each."""
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be among {KINDS}, got {list(kinds)}")
    if not voices:
        raise ValueError("at least one voice is needed")
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    pool = _pool(IN_DOMAIN)
    pausable = [e for e in pool if e.skill in PAUSABLE and len(e.question.split()) >= 2]
    rng.shuffle(pool)
    rng.shuffle(pausable)
    draws = {"pool": 0, "pausable": 0}

    def draw(which: str) -> Example:
        src = pool if which == "pool" else pausable
        ex = src[draws[which] % len(src)]
        draws[which] += 1
        return ex

    cases: list[Case] = []
    audio: dict[str, np.ndarray] = {}
    n_barge = 0
    for i in range(n_cases):
        kind = kinds[i % len(kinds)]
        voice = voices[(i + i // len(kinds)) % len(voices)]  # every kind meets every voice
        cid = f"c{i:04d}-{kind}"
        extra: dict[str, Any] = {}
        if kind == "pause":
            ex = draw("pausable")
            words = ex.question.split()
            at = pause_split(ex)
            first = _trim(voice.synthesize(" ".join(words[:at])), head=False, tail=True)
            second = _trim(voice.synthesize(" ".join(words[at:])), head=True, tail=False)
            gap = rng.randrange(PAUSE_MS[0], PAUSE_MS[1] + 1, 10) * RATE // 1000
            lead = round(LEAD_S * RATE)
            clean = _pad(np.concatenate([first, np.zeros(gap, np.float32), second]), LEAD_S, TAIL_S)
            extra["pauses"] = ((lead + len(first), lead + len(first) + gap),)
        else:
            ex = draw("pool")
            clean = _pad(voice.synthesize(ex.question), LEAD_S, NOISE_TAIL_S if kind == "noisy" else TAIL_S)
        start, end = speech_bounds(clean, RATE)
        x = clean
        if kind == "noisy":
            noise = ("white", "pink", "hum")[rng.randrange(3)]
            snr = round(rng.uniform(*SNR_DB), 1)
            x = mix_noise(clean, start, end, noise, snr, nrng)
            extra.update(noise=noise, snr_db=snr)
        if kind == "bargein":
            after = float(rng.randrange(BARGE_AFTER_MS[0], BARGE_AFTER_MS[1] + 1, 10))
            if n_barge % 3 == 2:
                bkind = FALSE_BARGE_KINDS[(n_barge // 3) % len(FALSE_BARGE_KINDS)]
                b, btext = _false_barge_audio(bkind, voice, nrng)
                extra.update(barge_question=btext)
            else:
                bkind = "speech"
                bex = draw("pool")
                while bex.answer == ex.answer:
                    bex = draw("pool")
                b = _pad(voice.synthesize(bex.question), 0.1, TAIL_S)
                extra.update(barge_question=bex.question, barge_answer=bex.answer, barge_key_word=bex.key_word)
            bs, be = speech_bounds(b, RATE)
            extra.update(barge_kind=bkind, barge_after_ms=after, barge_start=bs, barge_end=be)
            audio[cid + ".barge"] = b.astype(np.float32)
            n_barge += 1
        audio[cid] = x.astype(np.float32)
        cases.append(
            Case(
                id=cid, kind=kind, voice=voice.name, question=ex.question, answer=ex.answer,
                key_word=ex.key_word, skill=ex.skill, rate=RATE, speech_start=start, speech_end=end,
                **extra,
            )  # fmt: skip
        )
        if progress is not None:
            progress(1, cid)
    return cases, audio


def load_or_build(
    seed: int = 0,
    n_cases: int = 40,
    kinds: Sequence[str] = KINDS,
    voices: Sequence[Voice] | None = None,
    cache_dir: Path = DEFAULT_CACHE,
    progress: Callable[[int, str], None] | None = None,
    voice_source: str | None = None,
) -> TestSet:
    """The cached test set for these arguments, synthesized first if not cached yet."""
    if voices is None:
        voices, voice_source = heldout_voices()
    key = testset_key(seed, n_cases, kinds, voices)
    path = cache_dir / key
    if (path / "cases.json").is_file() and (path / "audio.npz").is_file():
        data = json.loads((path / "cases.json").read_text())
        return TestSet([Case.from_dict(c) for c in data["cases"]], path, key, data["meta"])
    cases, audio = generate_cases(seed, n_cases, kinds, voices, progress)
    meta = {
        "format": FORMAT_VERSION,
        "key": key,
        "seed": seed,
        "corpus_seed": CORPUS_SEED,
        "n_cases": n_cases,
        "kinds": list(kinds),
        "voices": [asdict(v) for v in voices],
        "voice_source": voice_source or "given",
        "rate": RATE,
    }
    tmp = cache_dir / f".{key}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arrays: dict[str, Any] = dict(audio)
    np.savez(tmp / "audio.npz", **arrays)
    (tmp / "cases.json").write_text(json.dumps({"meta": meta, "cases": [asdict(c) for c in cases]}, indent=1))
    if path.exists():  # another process built it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(path)
    return TestSet(cases, path, key, meta, _audio=audio)
