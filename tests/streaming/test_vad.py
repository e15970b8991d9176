"""Silero VAD: batching equals sequential, matches the package's reference, hears speech."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from models.runtime import RuntimeOptions
from streaming.audio import resample
from streaming.ring import RingBufferFull
from streaming.vad import (
    SAMPLE_RATE,
    WINDOW,
    SileroVad,
    VadRateError,
    VadShapeError,
    VadStream,
    default_model_path,
)


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad(options=RuntimeOptions(device="cpu"))


def _moonshine_asset(name: str) -> Path:
    spec = importlib.util.find_spec("moonshine_voice")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("moonshine_voice is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "assets" / name
    if not path.is_file():
        pytest.skip(f"{name} not shipped by moonshine_voice")
    return path


@pytest.fixture(scope="module")
def beckett() -> np.ndarray:
    x, sr = sf.read(_moonshine_asset("beckett.wav"), dtype="float32")
    assert x.ndim == 1
    return resample(x, sr, SAMPLE_RATE) if sr != SAMPLE_RATE else x


@pytest.fixture(scope="module")
def espeak_speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed")
    wav = tmp_path_factory.mktemp("espeak") / "q.wav"
    subprocess.run([exe, "-w", str(wav), "what is seven plus five"], check=True, timeout=30)
    x, sr = sf.read(wav, dtype="float32")
    return resample(x, sr, SAMPLE_RATE)


@pytest.fixture(scope="module")
def reference_probs() -> Iterator[object]:
    """The package's own torch-free reference, ``SileroVADSequence`` (sequence_vad.py).

    Importing the ``silero_vad`` package would import torch, so the module is
    loaded from its file under a private package name with a stub for the one
    helper it imports (``get_speech_timestamps_from_probs``, unused here).
    """
    spec = importlib.util.find_spec("silero_vad")
    assert spec is not None and spec.submodule_search_locations
    root = Path(list(spec.submodule_search_locations)[0])
    model = root / "data" / "silero_vad_16k_sequence.onnx"
    if not (root / "sequence_vad.py").is_file() or not model.is_file():
        pytest.skip("this silero_vad has no sequence reference")
    names = ["_silero_ref", "_silero_ref.utils_vad", "_silero_ref.sequence_vad"]
    pkg = types.ModuleType(names[0])
    pkg.__path__ = [str(root)]
    utils = types.ModuleType(names[1])
    utils.get_speech_timestamps_from_probs = None  # type: ignore[attr-defined]
    sys.modules[names[0]], sys.modules[names[1]] = pkg, utils
    try:
        mspec = importlib.util.spec_from_file_location(names[2], root / "sequence_vad.py")
        assert mspec is not None and mspec.loader is not None
        module = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(module)
        yield module.SileroVADSequence(str(model))
    finally:
        for name in names:
            sys.modules.pop(name, None)


def _frame_rms_db(x: np.ndarray) -> np.ndarray:
    n = len(x) // WINDOW
    frames = x[: n * WINDOW].reshape(n, WINDOW).astype(np.float64)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def _probs(vad: SileroVad, x: np.ndarray, chunk: int | None = None) -> np.ndarray:
    stream = VadStream(vad, max_buffer_s=len(x) / SAMPLE_RATE + 1)
    chunk = chunk or max(1, len(x))
    for i in range(0, len(x), chunk):
        stream.push(x[i : i + chunk])
    return stream.process_pending()


def test_model_file_is_found() -> None:
    assert default_model_path().name == "silero_vad.onnx"


def test_matches_package_reference(
    vad: SileroVad, beckett: np.ndarray, reference_probs: object
) -> None:
    ours = _probs(vad, beckett)
    ref = reference_probs.audio_forward(beckett)  # type: ignore[attr-defined]
    # the reference zero-pads a final partial window; we wait for it to fill
    assert len(ref) - len(ours) in (0, 1)
    np.testing.assert_allclose(ours, ref[: len(ours)], atol=1e-4)


def test_batched_equals_sequential(
    vad: SileroVad, beckett: np.ndarray, espeak_speech: np.ndarray
) -> None:
    rng = np.random.default_rng(1)
    audios = [
        beckett[: SAMPLE_RATE * 3],
        np.concatenate([np.zeros(4000, np.float32), espeak_speech]),
        (0.05 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32),
        beckett[SAMPLE_RATE * 4 : SAMPLE_RATE * 6],
    ]
    sequential = [_probs(vad, a) for a in audios]

    # A worker batching whatever sessions have a window ready; audio arrives in
    # 20 ms frames, the worker runs every 3 frames, so the batch size varies.
    streams = [VadStream(vad) for _ in audios]
    got: list[list[float]] = [[] for _ in audios]
    frame = SAMPLE_RATE // 50
    longest = max(len(a) for a in audios)
    batch_sizes = set()
    for step, start in enumerate(range(0, longest + 3 * frame, frame)):
        for stream, audio in zip(streams, audios, strict=True):
            stream.push(audio[start : start + frame])
        if step % 3:
            continue
        while True:
            ready = [i for i, s in enumerate(streams) if s.pending_windows()]
            if not ready:
                break
            windows = np.empty((len(ready), WINDOW), np.float32)
            for row, i in enumerate(ready):
                assert streams[i].take_window(out=windows[row]) is not None
            probs = vad.process_batch([streams[i].state for i in ready], windows)
            batch_sizes.add(len(ready))
            for row, i in enumerate(ready):
                got[i].append(float(probs[row]))
    assert len(batch_sizes) > 1 and max(batch_sizes) == len(audios)
    for seq, batched, stream in zip(sequential, got, streams, strict=True):
        assert stream.frames_done == len(seq)
        np.testing.assert_allclose(np.array(batched), seq, atol=1e-5)
    # the sessions really differ, so a mix-up of states would show
    assert not np.allclose(sequential[0][:20], sequential[2][:20], atol=0.05)


def test_stream_output_does_not_depend_on_push_size(
    vad: SileroVad, espeak_speech: np.ndarray
) -> None:
    whole = _probs(vad, espeak_speech)
    for chunk in (160, 333, 1024):
        np.testing.assert_allclose(_probs(vad, espeak_speech, chunk), whole, atol=1e-6)


def test_espeak_speech_is_speech_and_silence_is_not(
    vad: SileroVad, espeak_speech: np.ndarray
) -> None:
    lead = np.zeros(SAMPLE_RATE // 2, np.float32)  # 0.5 s = 15.6 windows
    x = np.concatenate([lead, espeak_speech, lead])
    probs = _probs(vad, x)
    level = _frame_rms_db(x)[: len(probs)]
    speech = level > -35
    first_speech = int(np.argmax(speech))
    assert 14 <= first_speech <= 17
    assert probs[:14].max() < 0.2, probs[:14]
    assert probs[-10:].max() < 0.2
    assert np.mean(probs[speech]) > 0.7
    assert np.mean(probs[speech] > 0.5) > 0.75


def test_human_recording_mean_probability_over_speech(vad: SileroVad, beckett: np.ndarray) -> None:
    probs = _probs(vad, beckett)
    # Ground truth from energy: 160 ms smoothed level within 12 dB of the loudest
    # is speech, 25 dB below it is a pause (single-frame clicks and breaths fall out).
    n = len(probs)
    power = np.mean(beckett[: n * WINDOW].reshape(n, WINDOW).astype(np.float64) ** 2, axis=1)
    level = 10 * np.log10(np.convolve(power, np.ones(5) / 5, mode="same") + 1e-12)
    speech = level > level.max() - 12
    pause = level < level.max() - 25
    assert speech.sum() > 60 and pause.sum() > 30
    assert np.mean(probs[speech]) > 0.85
    assert np.mean(probs[speech] > 0.5) > 0.85
    assert np.mean(probs[pause]) < 0.15


def test_state_reset_reproduces_results(vad: SileroVad, espeak_speech: np.ndarray) -> None:
    stream = VadStream(vad)
    x = espeak_speech[:SAMPLE_RATE]
    stream.push(x)
    first = stream.process_pending()
    stream.push(x)
    continued = stream.process_pending()
    assert not np.allclose(first, continued, atol=1e-6)  # state carried on
    stream.reset()
    assert stream.frames_done == 0
    stream.push(x)
    np.testing.assert_array_equal(stream.process_pending(), first)


def test_take_window_positions(vad: SileroVad) -> None:
    stream = VadStream(vad)
    x = np.arange(3 * WINDOW + 100, dtype=np.float32) / 1e5
    stream.push(x)
    assert stream.pending_windows() == 3
    w0 = stream.take_window()
    assert w0 is not None and stream.frames_done == 1
    np.testing.assert_array_equal(w0, x[:WINDOW])
    stream.take_window()
    w2 = stream.take_window()
    assert w2 is not None
    np.testing.assert_array_equal(w2, x[2 * WINDOW : 3 * WINDOW])
    assert stream.take_window() is None and stream.frames_done == 3
    assert stream.samples_pushed == len(x)


def test_errors(vad: SileroVad) -> None:
    s = vad.new_state()
    w = np.zeros((1, WINDOW), np.float32)
    with pytest.raises(VadRateError):
        vad.process_batch([s], w, sample_rate=8000)
    with pytest.raises(VadRateError):
        VadStream(vad, sample_rate=48000)
    with pytest.raises(VadShapeError):
        vad.process_batch([s], np.zeros((1, 480), np.float32))
    with pytest.raises(VadShapeError):
        vad.process_batch([s, vad.new_state()], w)
    with pytest.raises(VadShapeError):
        vad.process_batch([s], w.astype(np.float64))  # type: ignore[arg-type]
    with pytest.raises(VadShapeError):
        vad.process_batch([s, s], np.zeros((2, WINDOW), np.float32))
    with pytest.raises(VadShapeError):
        vad.process(s, np.zeros(256, np.float32))
    stream = VadStream(vad, max_buffer_s=0.1)
    with pytest.raises(VadShapeError):
        stream.push(np.zeros(160, np.int16))
    with pytest.raises(RingBufferFull):
        stream.push(np.zeros(SAMPLE_RATE, np.float32))
    assert 0.0 <= vad.process(s, np.zeros(WINDOW, np.float32)) <= 1.0
