"""Ground truth for test utterances, as ../shared/LATENCY.md defines it.

The speech end is the last sample of the last 10 ms window whose level is
above -40 dBFS in the clean source (before noise is mixed in); the start is
the first sample of the first such window.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from streaming.audio import resample

LEVEL_DBFS = -40.0


def speech_bounds(audio: np.ndarray, rate: int, level_dbfs: float = LEVEL_DBFS) -> tuple[int, int]:
    """(start, end) sample indices of speech: first and last 10 ms window above ``level_dbfs``.

    ``end`` is exclusive (one past the last sample of the last loud window).
    Raises ValueError when no window is loud enough.
    """
    win = max(1, rate // 100)
    n = len(audio) // win
    if n == 0:
        raise ValueError("audio shorter than one 10 ms window")
    frames = audio[: n * win].astype(np.float64).reshape(n, win)
    rms = np.sqrt(np.mean(frames**2, axis=1) + 1e-20)
    loud = np.flatnonzero(20 * np.log10(rms) > level_dbfs)
    if len(loud) == 0:
        raise ValueError(f"no 10 ms window above {level_dbfs} dBFS")
    return int(loud[0] * win), int((loud[-1] + 1) * win)


def espeak(text: str, *, voice: str = "en-us", speed: int = 160, pitch: int = 50, rate: int = 16000) -> np.ndarray:
    """Synthesize ``text`` with espeak-ng, as float32 mono at ``rate``."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise FileNotFoundError("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "say.wav"
        subprocess.run(
            [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text],
            check=True,
            capture_output=True,
        )
        audio, sr = sf.read(wav, dtype="float32", always_2d=False)
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    return resample(audio, sr, rate).astype(np.float32) if sr != rate else audio.astype(np.float32)


def with_silence(audio: np.ndarray, rate: int, lead_s: float, tail_s: float) -> np.ndarray:
    return np.concatenate(
        [np.zeros(int(lead_s * rate), np.float32), audio, np.zeros(int(tail_s * rate), np.float32)]
    )
