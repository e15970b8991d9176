"""User speech for the fused model: synthesis, perturbation and a feature cache.

Voices (../shared/BUILTIN_ASSISTANT.md): espeak-ng families x variants, flite
awb/rms/slt, and the piper joe voice with varied scales. Every utterance gets
a vocal-tract-length/pitch/tempo change (resampling trick), level, noise,
reverb and a simple EQ, leading and trailing silence, and with some
probability a 300-700 ms pause at a word boundary (synthesised in two parts).

Held out (never trained on; the project's own held-out voices):

* espeak-ng families ``en-gb-scotland`` and ``en-029`` (any variant);
* espeak-ng variants ``f4``, ``m7``, ``Annie``, ``edward`` (with any family);
* flite ``rms``.

Each item is a pure function of (seed, index): a corpus example, a voice and
perturbation parameters. Cached as log-mel features (float16) under
``data/fused/``::

    python -m models.training.speech_data --n-train 6000 --n-eval 600   # both caches

An eval item additionally keeps its 16 kHz PCM (int16) so the eval can run
the real streaming runtime.

``--only accent`` says training questions in the training espeak-ng voices with
random accent rules applied to espeak-ng's phonemes (``ACCENT_RULES``), for
accents no training voice has.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from models.domain import Example, core_length, generate_corpus, lone_social_examples, normalize
from models.features import SAMPLE_RATE, LogMel
from streaming.audio import resample

DATA_DIR = Path("data/fused")

ESPEAK_FAMILIES_TRAIN = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
ESPEAK_FAMILIES_HELD = ("en-gb-scotland", "en-029")
ESPEAK_VARIANTS_TRAIN = (
    "", "m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "f5", "klatt", "klatt3",
    "Andy", "adam", "belinda", "benjamin", "caleb", "david", "grandma", "grandpa",
    "linda", "max", "paul", "robert", "steph", "travis", "Alicia", "aunty",
)  # fmt: skip
ESPEAK_VARIANTS_HELD = ("f4", "m7", "Annie", "edward")
FLITE_TRAIN = ("awb", "slt")
FLITE_HELD = ("rms",)
# The "wide" split (--only wide): every other espeak-ng variant as well (edward2 is the
# held-out edward with another klatt mode, so it stays out), and flite with its pitch
# shifted (f0_shift) and a wider duration stretch.
ESPEAK_VARIANTS_WIDE = (
    "Alex", "Andrea", "AnxiousAndy", "Demonic", "Denis", "Diogo", "Gene", "Gene2", "Henrique",
    "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Mr serious", "Nguyen",
    "RicishayMax", "RicishayMax2", "RicishayMax3", "Storm", "Tweaky", "UniRobot", "anika",
    "anikaRobot", "announcer", "antonio", "boris", "croak", "ed", "fast", "gustave", "iven",
    "iven2", "iven3", "iven4", "john", "kaukovalta", "klatt2", "klatt4", "klatt5", "klatt6",
    "m8", "marcelo", "michel", "miguel", "norbert", "pablo", "pedro", "quincy", "rob",
    "robosoft", "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6", "robosoft7",
    "robosoft8", "sandro", "shelby", "steph2", "steph3", "victor", "whisper", "whisperf", "zac",
)  # fmt: skip


# The "accent" split (--only accent): training voices read an accented phoneme string.
# espeak-ng turns the text into its phoneme mnemonics (-x), a random subset of these
# rewrite rules changes them, and the same voice speaks the result ([[...]]). The rules
# are common features of many Englishes (th-stopping or -fronting, monophthongs, tense or
# full vowels, rhoticity, h-dropping, final cluster reduction, glottal t, final devoicing),
# chosen from general phonetics, not from the held-out families' output. Each entry is one
# feature: alternatives in it exclude each other.
ACCENT_RULES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("th-stop", ((r"T", "t"), (r"D", "d"))),
    ("th-front", ((r"T", "f"), (r"D", "v"))),
    ("face-mono", ((r"eI", "e:"),)),
    ("goat-mono", ((r"oU", "o:"),)),
    ("price-mono", ((r"aI(?!@)", "a:"),)),
    ("kit-tense", ((r"(?<![aeOU])I(?![@2#])", "i"),)),
    ("schwa-full", ((r"(?<![oeAiUaI])@(?![L2-5r])", "a"), (r"@L", "al"))),
    ("trap-broad", ((r"a(?![:#IU@])", "A:"),)),
    ("trap-raised", ((r"a(?![:#IU@])", "E"),)),
    ("strut-foot", ((r"V", "U"),)),
    ("strut-back", ((r"V", "O"),)),
    ("lot-open", ((r"0", "A:"),)),
    ("rhotic", ((r"(o@|A@|e@|3:)(?!r)", r"\1r"),)),
    ("h-drop", ((r"(^|\s)h", r"\1"),)),
    ("cluster", ((r"(n|s)(d|t)(?=\s|$)", r"\1"),)),
    ("glottal-t", ((r"t(?=\s|$)", "?"),)),
    ("devoice", ((r"z(?=\s|$)", "s"), (r"d(?=\s|$)", "t"))),
)  # fmt: skip
ACCENT_EXCLUSIVE = ({"th-stop", "th-front"}, {"trap-broad", "trap-raised"},
                    {"strut-foot", "strut-back"})  # fmt: skip


def draw_accent(rng: random.Random, p: float = 0.25) -> tuple[str, ...]:
    """A random accent: each rule with probability ``p``, at most one of each exclusive set,
    at least one rule."""
    names = [n for n, _ in ACCENT_RULES]
    while True:
        pick = [n for n in names if rng.random() < p]
        for ex in ACCENT_EXCLUSIVE:
            both = [n for n in pick if n in ex]
            if len(both) > 1:
                keep = rng.choice(both)
                pick = [n for n in pick if n not in ex or n == keep]
        if pick:
            return tuple(pick)


def accent_phonemes(phonemes: str, accent: tuple[str, ...]) -> str:
    """Apply the named ``ACCENT_RULES`` to an espeak-ng phoneme-mnemonic string."""
    for name, subs in ACCENT_RULES:
        if name in accent:
            for pat, rep in subs:
                phonemes = re.sub(pat, rep, phonemes)
    return phonemes


@dataclass(frozen=True)
class Voice:
    engine: str  # espeak | flite | joe
    name: str  # family+variant, flite voice, or "joe"
    group: str  # reporting group, e.g. "espeak-train", "espeak-heldout-family"


def train_voices() -> list[Voice]:
    out = [Voice("espeak", f + (f"+{v}" if v else ""), "espeak-train")
           for f in ESPEAK_FAMILIES_TRAIN for v in ESPEAK_VARIANTS_TRAIN]  # fmt: skip
    out += [Voice("flite", v, f"flite-{v}") for v in FLITE_TRAIN]
    out += [Voice("joe", "joe", "joe")]
    return out


def wide_voices() -> list[Voice]:
    """Training voices of the "wide" split: the espeak-ng train families with every
    variant not held out, and flite awb/slt at shifted pitch (group ``flite-wide``)."""
    out = [Voice("espeak", f + (f"+{v}" if v else ""), "espeak-wide")
           for f in ESPEAK_FAMILIES_TRAIN for v in ESPEAK_VARIANTS_TRAIN + ESPEAK_VARIANTS_WIDE]  # fmt: skip
    return out + [Voice("flite", v, "flite-wide") for v in FLITE_TRAIN]


def eval_voices() -> list[Voice]:
    fam = [Voice("espeak", f + (f"+{v}" if v else ""), "espeak-heldout-family")
           for f in ESPEAK_FAMILIES_HELD for v in ("", "m3", "f2", "klatt")]  # fmt: skip
    var = [Voice("espeak", f"{f}+{v}", "espeak-heldout-variant")
           for f in ("en-us", "en-gb") for v in ESPEAK_VARIANTS_HELD]  # fmt: skip
    return fam + var + [Voice("flite", "rms", "flite-rms")]


def _rng(seed: int, key: str) -> random.Random:
    return random.Random(
        int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big")
    )


# --------------------------------------------------------------------------- synthesis

_JOE: Any = None


def _read(path: str) -> np.ndarray:
    a, sr = sf.read(path, dtype="float32", always_2d=False)
    if a.ndim > 1:
        a = a.mean(axis=1)
    return resample(a, sr, SAMPLE_RATE).astype(np.float32) if sr != SAMPLE_RATE else a


def synth(voice: Voice, text: str, rng: random.Random,
          accent: tuple[str, ...] = (), ssml: bool = False) -> np.ndarray:  # fmt: skip
    """16 kHz float32 speech of ``text`` in ``voice`` with random engine-level tempo/pitch
    (espeak-ng with ``accent``: the text's phonemes after those ``ACCENT_RULES``)."""
    global _JOE
    if voice.engine == "joe":
        from piper import PiperVoice
        from piper.config import SynthesisConfig

        from models.training.piper_z import SeededPiperSession
        from models.tts import joe_voice_path

        if _JOE is None:
            _JOE = PiperVoice.load(joe_voice_path())
            _JOE.session = SeededPiperSession(joe_voice_path())  # the noise from the item's rng
        cfg = SynthesisConfig(
            length_scale=rng.uniform(0.8, 1.3), noise_scale=rng.uniform(0.3, 0.9),
            noise_w_scale=rng.uniform(0.4, 1.1),
        )  # fmt: skip
        _JOE.session.seed(rng.getrandbits(32))
        parts = [np.asarray(_JOE.phoneme_ids_to_audio(_JOE.phonemes_to_ids(p), cfg), np.float32)
                 for p in _JOE.phonemize(text) if p]  # fmt: skip
        a = np.concatenate(parts)
        return resample(a, _JOE.config.sample_rate, SAMPLE_RATE).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        wav = os.path.join(d, "a.wav")
        if voice.engine == "espeak":
            say = text
            if accent:
                ph = subprocess.run(["espeak-ng", "-q", "-x", "-v", voice.name, text], check=True,
                                    capture_output=True, text=True).stdout  # fmt: skip
                say = "[[" + accent_phonemes(" ".join(ph.split()), accent) + "]]"
            cmd = ["espeak-ng", "-v", voice.name, "-s", str(rng.randint(120, 210)),
                   "-p", str(rng.randint(20, 80)), "-w", wav, *(["-m"] if ssml else []), say]  # fmt: skip
        elif voice.group == "flite-wide":
            cmd = ["flite", "-voice", voice.name, "--setf",
                   f"duration_stretch={rng.uniform(0.75, 1.45):.3f}", "--setf",
                   f"f0_shift={rng.uniform(0.7, 1.4):.3f}", "-t", text, "-o", wav]  # fmt: skip
        else:
            cmd = ["flite", "-voice", voice.name, "--setf",
                   f"duration_stretch={rng.uniform(0.8, 1.35):.3f}", "-t", text, "-o", wav]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
        return _read(wav)


_WIN = 160  # 10 ms


def _window_rms(a: np.ndarray) -> np.ndarray:
    n = len(a) // _WIN
    return np.sqrt(np.mean(a[: n * _WIN].reshape(n, _WIN) ** 2, axis=1) + 1e-12)


def _trim(a: np.ndarray) -> np.ndarray:
    win = _WIN
    rms = _window_rms(a)
    if len(rms) == 0:
        return a
    loud = np.flatnonzero(rms > 10 ** (-45 / 20) * max(1e-4, float(np.abs(a).max())) * 10)
    if len(loud) == 0:
        return a
    return a[loud[0] * win : (loud[-1] + 1) * win]


def perturb(a: np.ndarray, rng: random.Random) -> np.ndarray:
    """VTL/pitch/tempo (resample), EQ, reverb; level and noise are applied after padding."""
    factor = rng.uniform(0.85, 1.15)  # >1: higher formants and pitch, faster
    if abs(factor - 1) > 0.01:
        import soxr

        a = soxr.resample(a, SAMPLE_RATE * factor, SAMPLE_RATE).astype(np.float32)
    if rng.random() < 0.5:  # one-pole tilt EQ
        alpha = rng.uniform(0.0, 0.6)
        if rng.random() < 0.5:  # low-pass
            h = (1 - alpha) * alpha ** np.arange(32)  # truncated one-pole response
            a = np.convolve(a, h.astype(np.float32))[: len(a)].astype(np.float32)
        else:  # pre-emphasis style high boost
            a = np.concatenate([a[:1], a[1:] - alpha * a[:-1]]).astype(np.float32)
    if rng.random() < 0.35:  # exponentially decaying noise room response
        rt60 = rng.uniform(0.1, 0.5)
        n = int(rt60 * SAMPLE_RATE)
        t = np.arange(n) / SAMPLE_RATE
        nr = np.random.default_rng(rng.getrandbits(32))
        ir = nr.standard_normal(n) * np.exp(-6.9 * t / rt60)
        ir[0] = 1.0 / rng.uniform(0.1, 0.6)
        ir = ir / np.sqrt(np.sum(ir**2))
        a = np.convolve(a, ir.astype(np.float32))[: len(a) + n // 2].astype(np.float32)
    return a


@dataclass
class Utterance:
    text: str  # normalized question (the CTC target's text)
    answer: str
    skill: str
    voice: str
    group: str
    pcm: np.ndarray  # 16 kHz float32
    speech_start: int  # samples
    speech_end: int
    pause: tuple[int, int] | None  # (start, end) samples of the inserted pause
    pause_word: int | None = None  # the pause comes before this word of ``text``
    pause_break: bool = False  # the pause is an SSML break inside one synthesis (non-final pitch)
    #: speech end and pause by ../LATENCY.md's ground truth (-40 dBFS 10 ms windows of the
    #: clean source), and the speech's loudest 10 ms window, dBFS (``contract_bounds``)
    end_dbfs: int | None = None
    pause_dbfs: tuple[int, int] | None = None
    peak_dbfs: float | None = None


def split_at_break(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two halves of one synthesis around its longest silence (the SSML break)."""
    quiet = _window_rms(a) < 1e-3 * max(1e-4, float(np.abs(a).max()))
    edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(int), [0]])))
    starts, ends = edges[0::2], edges[1::2]
    if len(starts) == 0:
        raise RuntimeError("no break found in the synthesis")
    k = int(np.argmax(ends - starts))
    return _trim(a[: starts[k] * _WIN]), _trim(a[ends[k] * _WIN :])


def contract_bounds(clean: np.ndarray, start: int, end: int, pause: tuple[int, int] | None
                    ) -> tuple[int, tuple[int, int] | None, float]:  # fmt: skip
    """The speech end and the pause as ../LATENCY.md defines ground truth: the last (first)
    10 ms window above -40 dBFS of the clean source, searched within the labelled segments
    (a segment with no such window keeps its label); and the loudest 10 ms window of the
    speech in dBFS. The labels (``start``, ``end``, ``pause``) are the synthesized segments'
    bounds, reverb tails included."""
    from clients.groundtruth import speech_bounds

    peak = float(20 * np.log10(_window_rms(clean[start:end]).max(initial=1e-10)))

    def bound(a: int, b: int, last: bool, default: int) -> int:
        try:
            s, e = speech_bounds(clean[a:b], SAMPLE_RATE)
        except ValueError:
            return default
        return a + (e if last else s)

    if pause is None:
        return bound(start, end, True, end), None, peak
    return (bound(pause[1], end, True, end),
            (bound(start, pause[0], True, pause[0]), bound(pause[1], end, False, pause[1])), peak)


def make_utterance(ex: Example, voice: Voice, rng: random.Random, pause_prob: float,
                   pause_style: str = "split") -> Utterance:  # fmt: skip
    """One utterance. A pause is made by synthesizing the two halves apart (``split``: each
    half ends like a whole utterance), or, with ``pause_style="break"`` for espeak-ng
    voices, by one synthesis with an SSML break at the word boundary, so the first half
    keeps the pitch of a sentence that goes on; the break's own silence is then replaced by
    the same drawn gap. Both styles draw the same random numbers, so an item differs only
    in its speech."""
    text = normalize(ex.question)
    words = text.split()
    pause_at, pause_break = None, False
    if len(words) >= 2 and rng.random() < pause_prob:
        pause_at = rng.randrange(1, len(words))
    accent = draw_accent(rng) if voice.group == "espeak-accent" else ()  # one for both halves
    if pause_at is None:
        segs = [perturb(_trim(synth(voice, text, rng, accent)), rng)]
    else:
        sub = rng.getstate()
        first, rest = " ".join(words[:pause_at]), " ".join(words[pause_at:])
        pause_break = pause_style == "break" and voice.engine == "espeak" and not accent
        if pause_break:
            a, b = split_at_break(synth(voice, f'{first} <break time="600ms"/> {rest}', rng,
                                        ssml=True))  # fmt: skip
        else:
            a = _trim(synth(voice, first, rng, accent))
            b = _trim(synth(voice, rest, rng, accent))
        rng.setstate(sub)
        pa = perturb(a, rng)
        rng.setstate(sub)  # the same perturbation for both halves
        segs = [pa, perturb(b, rng)]
    lead = int(rng.uniform(0.15, 0.5) * SAMPLE_RATE)
    tail = int(rng.uniform(0.5, 0.9) * SAMPLE_RATE)
    gap = int(rng.uniform(0.3, 0.7) * SAMPLE_RATE)
    pieces = [np.zeros(lead, np.float32), segs[0]]
    pause = None
    if len(segs) == 2:
        p0 = lead + len(segs[0])
        pause = (p0, p0 + gap)
        pieces += [np.zeros(gap, np.float32), segs[1]]
    pieces.append(np.zeros(tail, np.float32))
    clean = np.concatenate(pieces)
    peak = float(np.abs(clean).max()) + 1e-9
    clean = clean / peak * 10 ** (rng.uniform(-26, -3) / 20)
    end = lead + sum(len(s) for s in segs) + (gap if pause else 0)
    nr = np.random.default_rng(rng.getrandbits(32))
    noise = nr.standard_normal(len(clean)).astype(np.float32)
    if rng.random() < 0.5:  # pinkish
        noise = np.cumsum(noise) * 0.05
        noise -= np.convolve(noise, np.ones(64) / 64, mode="same")
    sig_rms = float(np.sqrt(np.mean(clean[lead:end] ** 2)) + 1e-9)
    snr = rng.uniform(12, 45)
    noise *= sig_rms / (float(np.sqrt(np.mean(noise**2))) + 1e-9) * 10 ** (-snr / 20)
    pcm = np.clip(clean + noise, -1, 1).astype(np.float32)
    return Utterance(text, ex.answer, ex.skill, voice.name, voice.group, pcm, lead, end, pause,
                     pause_at, pause_break, *contract_bounds(clean, lead, end, pause))  # fmt: skip


# --------------------------------------------------------------------------- item plan


def item_plan(seed: int, n: int, split: str) -> list[tuple[Example, Voice, int]]:
    """Deterministic (example, voice, item seed) for ``n`` items of ``split``
    ("train", "eval", or "bare": ``domain.lone_social_examples`` in training voices; the
    corpus draw has few of them, and spoken "hi" was heard as "hey")."""
    corpus = generate_corpus(seed)
    rng = random.Random(f"plan:{seed}:{split}")
    if split in ("train", "bare", "wide", "accent"):
        train_pool = [e for e in corpus if e.split == "train"]
        pool = lone_social_examples(corpus) if split == "bare" else train_pool
        if split == "wide":
            voices = wide_voices() + [Voice("joe", "joe", "joe")]
        elif split == "accent":
            voices = [Voice("espeak", v.name, "espeak-accent") for v in wide_voices()
                      if v.engine == "espeak"]  # fmt: skip
        else:
            voices = train_voices()
        espeak = [v for v in voices if v.engine == "espeak"]
        other = {(f"{v.group}:" if v.group == "flite-wide" else "") + v.name: v
                 for v in voices if v.engine != "espeak"}  # fmt: skip
    else:
        pool = [e for e in corpus if e.split == "heldout"]
        voices = eval_voices()
    # Balance skills so rare skills (greeting...) are heard enough.
    by_skill: dict[str, list[Example]] = {}
    for e in pool:
        by_skill.setdefault(e.skill, []).append(e)
    skills = sorted(by_skill)
    weights = {"fallback": 1.5, "incomplete": 1.5, "multiplication": 1.5, "addition": 1.3,
               "subtraction": 1.3, "capitals": 1.2, "counting": 1.2, "spelling": 1.2}  # fmt: skip
    w = np.array([weights.get(s, 0.6) for s in skills])
    w /= w.sum()
    out = []
    for i in range(n):
        skill = skills[min(len(skills) - 1, int(np.searchsorted(np.cumsum(w), rng.random())))]
        ex = rng.choice(by_skill[skill])
        if split == "accent":  # every training family x variant, accented
            v = rng.choice(espeak)
        elif split == "wide":  # mostly the new variants and shifted flite
            r = rng.random()
            if r < 0.8:
                v = rng.choice(espeak)
            elif r < 0.95:
                v = other["flite-wide:" + rng.choice(FLITE_TRAIN)]
            else:
                v = other["joe"]
        elif split == "train" or split == "bare":
            r = rng.random()
            if r < 0.7:
                v = rng.choice(espeak)
            elif r < 0.81:
                v = other["awb"]
            elif r < 0.92:
                v = other["slt"]
            else:
                v = other["joe"]
        else:
            v = voices[i % len(voices)]
        out.append((ex, v, rng.getrandbits(32)))
    return out


_FE: LogMel | None = None


def _work(args: tuple[Example, Voice, int, float, bool, str]) -> dict[str, Any]:
    global _FE
    ex, voice, s, pause_prob, keep_pcm, pause_style = args
    if _FE is None:
        _FE = LogMel()
    u = make_utterance(ex, voice, random.Random(s), pause_prob, pause_style)
    d: dict[str, Any] = {
        "text": u.text, "answer": u.answer, "skill": u.skill, "voice": u.voice,
        "group": u.group, "start": u.speech_start, "end": u.speech_end,
        "pause": u.pause, "pause_word": u.pause_word, "pause_break": u.pause_break,
        "end_dbfs": u.end_dbfs, "pause_dbfs": u.pause_dbfs, "peak_dbfs": u.peak_dbfs,
        "mel": _FE.compute(u.pcm).astype(np.float16),
    }  # fmt: skip
    if keep_pcm:
        d["pcm"] = (u.pcm * 32767).astype(np.int16)
    return d


def build_cache(
    path: Path, seed: int, n: int, split: str, pause_prob: float, workers: int, offset: int = 0,
    keep_pcm: bool = False,
    pause_style: str = "split",
) -> None:
    plan = item_plan(seed, n, split)[offset:]
    n = len(plan)
    keep = split == "eval" or keep_pcm
    jobs = [(ex, v, s, pause_prob, keep, pause_style) for ex, v, s in plan]
    items: list[dict[str, Any]] = []
    t0 = time.time()
    with Pool(workers) as pool:
        for i, d in enumerate(pool.imap(_work, jobs, chunksize=8)):
            items.append(d)
            if (i + 1) % 200 == 0 or i + 1 == n:
                el = time.time() - t0
                print(f"[{split}] {i + 1}/{n} utterances  {el:.0f}s  eta {el / (i + 1) * (n - i - 1):.0f}s",
                      flush=True)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, np.array(items, dtype=object), allow_pickle=True)
    os.replace(tmp, path)


def load_cache(path: Path) -> list[dict[str, Any]]:
    return list(np.load(path, allow_pickle=True))


def before_fillers(it: dict[str, Any]) -> bool:
    """The item's pause comes after a complete question, before only fillers ("what is one
    times zero <pause> please"): no text tells it from the end of the turn. False when the
    cache does not know the pause's word (caches made before ``pause_word``)."""
    k = it.get("pause_word")
    if k is None or it["skill"] == "incomplete":
        return False
    words = it["text"].split()
    return k < len(words) and core_length(words) <= k


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-eval", type=int, default=600)
    ap.add_argument("--pause-prob", type=float, default=0.25)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", choices=("train", "eval", "dev", "dev-wide", "bare", "wide", "accent"),
                    default=None,
                    help="dev: the training cache's last 200 items (never fitted), with audio; "
                         "dev-wide: wide-plan items [offset, n-wide) with audio (voices stage 3 "
                         "never trained on; --offset defaults to n-wide - 400); "
                         "bare: --n-bare social questions said alone; wide: --n-wide training "
                         "questions in more espeak-ng variants and pitch-shifted flite; accent: "
                         "--n-accent training questions in espeak-ng training voices with "
                         "random accent rules (ACCENT_RULES)")
    ap.add_argument("--n-bare", type=int, default=900)
    ap.add_argument("--n-wide", type=int, default=24000)
    ap.add_argument("--n-accent", type=int, default=20000)
    ap.add_argument("--pause-style", choices=("split", "break"), default="split",
                    help="eval, train, dev: how espeak-ng pauses are made (break: one synthesis "
                         "with an SSML break, cached as speech_..._break.npy)")  # fmt: skip
    ap.add_argument("--offset", type=int, default=0,
                    help="train, wide, accent: items [offset, n) (extends a cache)")  # fmt: skip
    args = ap.parse_args(argv)
    if shutil.which("espeak-ng") is None or shutil.which("flite") is None:
        sys.exit("espeak-ng and flite are required")
    if args.only == "dev":  # the same utterances as the training cache's dev slice, with PCM
        # (or, with --offset, train-plan items [offset, n-train) that no training cache holds)
        start = args.offset or args.n_train - 200
        tail = f"_from{args.offset}" if args.offset else ""
        tail += "_break" if args.pause_style == "break" else ""
        path = DATA_DIR / f"speech_dev_s{args.seed}_n{args.n_train}{tail}.npy"
        if not path.exists():
            build_cache(path, args.seed, args.n_train, "train", args.pause_prob, args.workers,
                        start, keep_pcm=True, pause_style=args.pause_style)  # fmt: skip
        print(path)
        return
    if args.only == "dev-wide":  # wide-plan items [offset, n-wide) with PCM: voices no stage 3 heard
        start = args.offset or args.n_wide - 400
        path = DATA_DIR / f"speech_devwide_s{args.seed}_n{args.n_wide}_from{start}.npy"
        if not path.exists():
            build_cache(path, args.seed, args.n_wide, "wide", args.pause_prob, args.workers, start,
                        keep_pcm=True)  # fmt: skip
        print(path)
        return
    if args.only == "bare":
        path = DATA_DIR / f"speech_bare_s{args.seed}_n{args.n_bare}.npy"
        if not path.exists():
            build_cache(path, args.seed, args.n_bare, "bare", 0.0, args.workers)
        print(path)
        return
    if args.only in ("wide", "accent"):
        n = args.n_wide if args.only == "wide" else args.n_accent
        tail = f"_from{args.offset}" if args.offset else ""
        path = DATA_DIR / f"speech_{args.only}_s{args.seed}_n{n}{tail}.npy"
        if not path.exists():
            build_cache(path, args.seed, n, args.only, args.pause_prob, args.workers, args.offset)
        print(path)
        return
    for split, n in (("eval", args.n_eval), ("train", args.n_train)):
        if args.only and split != args.only:
            continue
        offset = args.offset if split == "train" else 0
        tail = f"_from{offset}" if offset else ""
        style = args.pause_style
        tail += "_break" if style == "break" else ""
        tail += f"_p{args.pause_prob:g}" if split == "train" and args.pause_prob != 0.25 else ""
        path = DATA_DIR / f"speech_{split}_s{args.seed}_n{n}{tail}.npy"
        if path.exists():
            print(f"{path} exists")
            continue
        pause = args.pause_prob if split == "train" else 0.35
        build_cache(path, args.seed, n, split, pause, args.workers, offset, pause_style=style)


if __name__ == "__main__":
    main()
