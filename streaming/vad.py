"""Silero VAD v6 on ONNX Runtime: shared weights, per-session state, batched steps.

One :class:`SileroVad` per server holds the ONNX session (opened through
:func:`models.runtime.create_session`, the one place that picks providers and
threads). Each session owns a :class:`VadState` (the model's LSTM state and the
64-sample context carried between windows) or, more conveniently, a
:class:`VadStream` that also buffers incoming audio and cuts it into
512-sample windows. A batching worker collects one window from each session
with pending audio and runs them all in ONE ``process_batch`` call.

The graph (``silero_vad.onnx`` from the installed ``silero_vad`` package) takes
``input`` (B, 64 + 512) float32, the previous window's last 64 samples
followed by the new window, ``state`` (2, B, 128) float32 and ``sr`` int64 (a
scalar), and returns ``output`` (B, 1) speech probabilities and ``stateN``
(2, B, 128). That is what the package's own ``OnnxWrapper`` feeds it.

Worker sketch (runs off the event loop)::

    vad = SileroVad()                              # once per server
    streams = [VadStream(vad) for _ in sessions]   # one per session
    ready = [s for s in streams if s.pending_windows()]
    windows = np.empty((len(ready), WINDOW), np.float32)
    frames = [s.take_window(out=windows[i]) for i, s in enumerate(ready)]
    probs = vad.process_batch([s.state for s in ready], windows)  # (B,)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.runtime import RuntimeOptions, create_session
from streaming.ring import RingBuffer

SAMPLE_RATE = 16000
"""The only input rate accepted (resample first with ``streaming.audio``)."""
WINDOW = 512
"""Samples per VAD step at 16 kHz (32 ms)."""
CONTEXT = 64
"""Trailing samples of the previous window prepended to each window."""
STATE_SHAPE = (2, 128)
"""Per-session recurrent state; batched as (2, B, 128)."""
FRAME_S = WINDOW / SAMPLE_RATE
"""Seconds per VAD window (0.032)."""


class VadError(Exception):
    """Base class of VAD errors."""


class VadShapeError(VadError, ValueError):
    """Audio passed to the VAD has the wrong shape, dtype or batch size."""


class VadRateError(VadError, ValueError):
    """Audio passed to the VAD is not at :data:`SAMPLE_RATE`."""


class VadModelError(VadError):
    """The ONNX graph does not have the inputs and outputs this wrapper expects."""


def default_model_path() -> Path:
    """Locate ``silero_vad.onnx`` inside the installed ``silero_vad`` package.

    Uses the import system's metadata only: importing ``silero_vad`` itself
    would pull in torch, which serving does not install.
    """
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise VadModelError("the silero-vad package is not installed")
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / "silero_vad.onnx"
        if path.is_file():
            return path
    raise VadModelError("silero_vad.onnx not found in the silero_vad package's data/ folder")


class VadState:
    """One session's recurrent state: LSTM state (2, 128) and the 64-sample context.

    Create it with :meth:`SileroVad.new_state`; :meth:`reset` returns it to the
    start-of-stream state (zeros), e.g. when a session restarts its audio.
    """

    __slots__ = ("rnn", "context")

    def __init__(self) -> None:
        self.rnn: np.ndarray[Any, np.dtype[np.float32]] = np.zeros(STATE_SHAPE, dtype=np.float32)
        self.context: np.ndarray[Any, np.dtype[np.float32]] = np.zeros(CONTEXT, dtype=np.float32)

    def reset(self) -> None:
        self.rnn.fill(0.0)
        self.context.fill(0.0)


def _check_rate(sample_rate: int) -> None:
    if sample_rate != SAMPLE_RATE:
        raise VadRateError(
            f"Silero VAD here runs at {SAMPLE_RATE} Hz, got {sample_rate} Hz; resample first"
        )


class SileroVad:
    """The shared Silero VAD model: one ONNX session serving every session's state.

    ``path`` defaults to the packaged ``silero_vad.onnx``; ``options`` go to
    :func:`models.runtime.create_session` (default: CPU-or-CUDA auto, one
    thread). The instance holds no per-session data, so one worker thread may
    call it for all sessions; it is not meant to be called from several
    threads at once.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        options: RuntimeOptions | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else default_model_path()
        self.session = create_session(self.path, options or RuntimeOptions())
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != {"input", "state", "sr"} or outputs[:2] != ["output", "stateN"]:
            raise VadModelError(
                f"{self.path} is not a streaming Silero VAD graph: inputs {sorted(inputs)}, "
                f"outputs {outputs}"
            )
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    def new_state(self) -> VadState:
        """A fresh per-session state (zeros)."""
        return VadState()

    def process_batch(
        self,
        states: list[VadState],
        windows: npt.NDArray[np.float32],
        *,
        sample_rate: int = SAMPLE_RATE,
    ) -> np.ndarray:
        """Run one window per session in a single ONNX call; return (B,) probabilities.

        ``windows[i]`` (float32, 512 samples at 16 kHz) is the next window of the
        session that owns ``states[i]``; every state is advanced in place. Each
        state may appear at most once per batch. Results equal running the
        sessions one by one.
        """
        _check_rate(sample_rate)
        if not isinstance(windows, np.ndarray) or windows.dtype != np.float32:
            raise VadShapeError(
                f"windows must be a float32 ndarray, got {getattr(windows, 'dtype', type(windows))}"
            )
        b = len(states)
        if windows.shape != (b, WINDOW):
            raise VadShapeError(
                f"windows must have shape ({b}, {WINDOW}) for {b} states, got {windows.shape}"
            )
        if b == 0:
            return np.zeros(0, dtype=np.float32)
        if len({id(s) for s in states}) != b:
            raise VadShapeError("a VadState appears more than once in one batch")
        x = np.empty((b, CONTEXT + WINDOW), dtype=np.float32)  # (B, 576)
        state = np.empty((2, b, 128), dtype=np.float32)  # (2, B, 128)
        for i, s in enumerate(states):
            x[i, :CONTEXT] = s.context
            state[:, i, :] = s.rnn
        x[:, CONTEXT:] = windows
        out, state_n = self.session.run(
            ["output", "stateN"], {"input": x, "state": state, "sr": self._sr}
        )
        for i, s in enumerate(states):
            s.rnn[...] = state_n[:, i, :]
            s.context[...] = windows[i, -CONTEXT:]
        return np.asarray(out, dtype=np.float32).reshape(b)

    def process(
        self, state: VadState, window: npt.NDArray[np.float32], *, sample_rate: int = SAMPLE_RATE
    ) -> float:
        """One session, one 512-sample window: the speech probability in [0, 1]."""
        if not isinstance(window, np.ndarray) or window.shape != (WINDOW,):
            raise VadShapeError(
                f"window must be a ({WINDOW},) array, got {getattr(window, 'shape', type(window))}"
            )
        return float(
            self.process_batch([state], window.reshape(1, WINDOW), sample_rate=sample_rate)[0]
        )


class VadStream:
    """One session's VAD input: buffers 16 kHz audio of any chunk size into windows.

    ``push`` audio as it arrives; a worker calls :meth:`take_window` for each
    pending window and feeds it, with :attr:`state`, to
    :meth:`SileroVad.process_batch`. Window ``k`` covers samples
    ``[k * 512, (k + 1) * 512)`` of the stream; :attr:`frames_done` is the index
    the next taken window will have. The buffer holds at most ``max_buffer_s``
    of audio and raises :class:`streaming.ring.RingBufferFull` beyond that,
    because silently dropping audio would shift every later position.
    """

    def __init__(
        self,
        vad: SileroVad,
        *,
        sample_rate: int = SAMPLE_RATE,
        max_buffer_s: float = 2.0,
    ) -> None:
        _check_rate(sample_rate)
        capacity = int(round(max_buffer_s * SAMPLE_RATE))
        if capacity < WINDOW:
            raise ValueError(f"max_buffer_s must hold at least one window, got {max_buffer_s}")
        self.vad = vad
        self.state = vad.new_state()
        self._ring = RingBuffer(capacity, dtype=np.float32, overflow="reject")
        self._frames_done = 0

    @property
    def frames_done(self) -> int:
        """Windows taken so far: the index of the next window."""
        return self._frames_done

    @property
    def samples_pushed(self) -> int:
        """16 kHz samples received so far (the stream's input timeline)."""
        return self._ring.total_written

    def push(self, x: npt.NDArray[np.floating[Any]]) -> None:
        """Append 1-D float audio at 16 kHz (any length). Raises ``RingBufferFull`` when over the bound."""
        if not isinstance(x, np.ndarray) or x.ndim != 1:
            raise VadShapeError(f"expected 1-D audio, got {getattr(x, 'shape', type(x))}")
        if not np.issubdtype(x.dtype, np.floating):
            raise VadShapeError(f"expected float samples in [-1, 1), got dtype {x.dtype}")
        self._ring.write(x)

    def pending_windows(self) -> int:
        """Complete windows waiting to be taken."""
        return len(self._ring) // WINDOW

    def take_window(self, out: np.ndarray | None = None) -> np.ndarray | None:
        """Remove the next 512-sample window, or return ``None`` if none is complete.

        With ``out`` (a float32 view of 512 samples, e.g. one row of the worker's
        batch array) the window is written there and ``out`` is returned, so the
        worker allocates nothing per frame.
        """
        if len(self._ring) < WINDOW:
            return None
        if out is None:
            out = np.empty(WINDOW, dtype=np.float32)
        elif out.shape != (WINDOW,):
            raise VadShapeError(f"out must have shape ({WINDOW},), got {out.shape}")
        self._ring.read_into(out)
        self._frames_done += 1
        return out

    def process_pending(self) -> np.ndarray:
        """Run every complete pending window through the VAD, one by one; return the probabilities.

        The single-session path (tests, tools). A server batches across
        sessions with :meth:`take_window` instead.
        """
        n = self.pending_windows()
        probs = np.empty(n, dtype=np.float32)
        window = np.empty((1, WINDOW), dtype=np.float32)
        for k in range(n):
            self.take_window(out=window[0])
            probs[k] = self.vad.process_batch([self.state], window)[0]
        return probs

    def reset(self) -> None:
        """Start the stream over: drop buffered audio, zero the state and positions."""
        self._ring = RingBuffer(self._ring.capacity, dtype=np.float32, overflow="reject")
        self.state.reset()
        self._frames_done = 0
