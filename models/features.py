"""Log-mel front end of the fused model's audio encoder (numpy only, run time).

80 mel bins, 25 ms Hann window, 10 ms hop, 16 kHz mono float32 PCM in
[-1, 1]. Frame ``i`` covers samples ``[160 i, 160 i + 400)`` (no centring, no
padding), so a stream yields exactly the frames of the offline call::

    fe = LogMel()
    feats = fe.compute(pcm)                 # (T, 80) float32, offline

    stream = fe.new_stream()                # per-session state
    parts = [stream.push(chunk) for chunk in chunks]   # any chunk sizes
    np.concatenate(parts) ~= feats          # equal up to BLAS rounding (1e-5)

Features are ``log(max(mel, 1e-6))``; the encoder applies its own fixed
normalisation (stored in the fused bundle), never per-utterance statistics,
so streaming and offline agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
N_MELS = 80
WIN = 400  # 25 ms
HOP = 160  # 10 ms
N_FFT = 512
FMIN, FMAX = 20.0, 7600.0


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular HTK-mel filters, float32."""
    freqs = np.linspace(0.0, rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array(FMIN)), _hz_to_mel(np.array(FMAX)), n_mels + 2)
    )
    fb = np.zeros((len(freqs), n_mels), dtype=np.float64)
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (freqs - lo) / (mid - lo)
        down = (hi - freqs) / (hi - mid)
        fb[:, m] = np.maximum(0.0, np.minimum(up, down))
    return fb.astype(np.float32)


@dataclass
class LogMelStream:
    """Per-stream state: samples not yet consumed by a complete frame."""

    fe: LogMel
    pending: np.ndarray

    def push(self, pcm: np.ndarray) -> np.ndarray:
        """Append ``pcm`` (float32, 16 kHz); return the frames now complete, (n, 80)."""
        buf = np.concatenate([self.pending, np.asarray(pcm, dtype=np.float32).reshape(-1)])
        n = 0 if len(buf) < WIN else 1 + (len(buf) - WIN) // HOP
        self.pending = buf[n * HOP :]
        return (
            self.fe.compute(buf[: (n - 1) * HOP + WIN]) if n else np.zeros((0, N_MELS), np.float32)
        )

    def reset(self) -> None:
        self.pending = np.zeros(0, np.float32)


class LogMel:
    """Shared, stateless log-mel extractor; :meth:`new_stream` gives per-session state."""

    def __init__(self) -> None:
        self.window = np.hanning(WIN + 1)[:-1].astype(np.float32)  # periodic Hann
        self.fb = mel_filterbank()

    def n_frames(self, n_samples: int) -> int:
        return 0 if n_samples < WIN else 1 + (n_samples - WIN) // HOP

    def compute(self, pcm: np.ndarray) -> np.ndarray:
        """(N,) float32 PCM at 16 kHz -> (T, 80) float32 log-mel, T = 1 + (N - 400) // 160."""
        x = np.asarray(pcm, dtype=np.float32).reshape(-1)
        n = self.n_frames(len(x))
        if n == 0:
            return np.zeros((0, N_MELS), np.float32)
        idx = np.arange(WIN)[None, :] + HOP * np.arange(n)[:, None]  # (T, 400)
        frames = x[idx] * self.window
        spec = np.abs(np.fft.rfft(frames, n=N_FFT, axis=1)).astype(np.float32) ** 2  # (T, 257)
        return np.log(np.maximum(spec @ self.fb, 1e-6)).astype(np.float32)

    def new_stream(self) -> LogMelStream:
        return LogMelStream(self, np.zeros(0, np.float32))
