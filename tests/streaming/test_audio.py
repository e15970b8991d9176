"""PCM16 conversion and chunk-size independence of the streaming resampler."""

from __future__ import annotations

import numpy as np
import pytest

from streaming.audio import (
    SUPPORTED_RATES,
    StreamResampler,
    UnsupportedRate,
    float32_to_pcm16,
    pcm16_to_float32,
    resample,
)


def test_pcm16_round_trip_is_exact() -> None:
    pcm = np.array([-32768, -1, 0, 1, 12345, 32767], dtype="<i2")
    x = pcm16_to_float32(pcm.tobytes())
    assert x.dtype == np.float32
    assert x[0] == -1.0 and x[2] == 0.0 and x[-1] < 1.0
    assert float32_to_pcm16(x) == pcm.tobytes()


def test_pcm16_is_little_endian() -> None:
    assert pcm16_to_float32(b"\x00\x40").tolist() == [0.5]
    assert float32_to_pcm16(np.array([0.5], np.float32)) == b"\x00\x40"


def test_float32_to_pcm16_clips_and_rounds() -> None:
    x = np.array([2.0, -2.0, 1.0, np.nan, 0.4 / 32768, 0.6 / 32768], dtype=np.float32)
    out = np.frombuffer(float32_to_pcm16(x), dtype="<i2").tolist()
    assert out == [32767, -32768, 32767, 0, 0, 1]


def test_pcm16_odd_length_raises() -> None:
    with pytest.raises(ValueError):
        pcm16_to_float32(b"\x00\x01\x02")
    assert pcm16_to_float32(b"").shape == (0,)


def _signal(rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    x = 0.4 * np.sin(2 * np.pi * 330 * t) + 0.2 * np.sin(2 * np.pi * 2100 * t)
    return (x + 0.02 * rng.standard_normal(t.shape)).astype(np.float32)


def _run_chunked(r: StreamResampler, x: np.ndarray, chunk: int) -> np.ndarray:
    outs = [r.process(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    outs.append(r.flush())
    return np.concatenate(outs)


RATE_PAIRS = [(48000, 16000), (16000, 24000), (44100, 16000), (8000, 22050), (24000, 48000)]


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_output_does_not_depend_on_chunk_size(in_rate: int, out_rate: int) -> None:
    x = _signal(in_rate, 0.25)[: int(in_rate * 0.25) - 3]  # not a whole number of ms
    whole = _run_chunked(StreamResampler(in_rate, out_rate), x, len(x))
    # libsoxr's rounding of the output length: within half a sample of the exact ratio
    assert abs(len(whole) - len(x) * out_rate / in_rate) <= 0.5
    for ms in (1, 20, 37):
        chunk = max(1, in_rate * ms // 1000)
        joined = _run_chunked(StreamResampler(in_rate, out_rate), x, chunk)
        assert joined.shape == whole.shape
        np.testing.assert_allclose(joined, whole, atol=1e-5)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(48000, 16000), (16000, 48000)])
def test_resampled_tone_keeps_its_frequency_and_level(in_rate: int, out_rate: int) -> None:
    t = np.arange(in_rate) / in_rate
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    y = resample(x, in_rate, out_rate)
    core = y[out_rate // 10 : -out_rate // 10]
    spectrum = np.abs(np.fft.rfft(core * np.hanning(len(core))))
    peak_hz = np.argmax(spectrum) * out_rate / len(core)
    assert abs(peak_hz - 1000) < 5
    assert abs(np.sqrt(np.mean(core**2)) - 0.5 / np.sqrt(2)) < 0.01


def test_flush_rearms_for_a_new_stream() -> None:
    x = _signal(48000, 0.1)
    r = StreamResampler(48000, 16000)
    first = _run_chunked(r, x, 960)
    second = _run_chunked(r, x, 960)
    np.testing.assert_array_equal(first, second)


def test_identity_fast_path_copies() -> None:
    r = StreamResampler(16000, 16000)
    assert r.identity
    x = _signal(16000, 0.02)
    y = r.process(x)
    np.testing.assert_array_equal(x, y)
    assert not np.shares_memory(x, y)
    assert r.flush().shape == (0,)
    assert r.process(x.astype(np.float64)).dtype == np.float32


def test_unsupported_rates_raise() -> None:
    assert 16000 in SUPPORTED_RATES
    with pytest.raises(UnsupportedRate):
        StreamResampler(11025, 16000)
    with pytest.raises(ValueError):
        StreamResampler(16000, 96000)
    with pytest.raises(ValueError):
        StreamResampler(16000, 48000).process(np.zeros((2, 10), np.float32))
