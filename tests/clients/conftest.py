"""Fixtures for client tests: short espeak-ng utterances (skipped without espeak-ng)."""

from __future__ import annotations

import shutil
from functools import cache

import numpy as np
import pytest

from clients.groundtruth import espeak

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (make sysdeps)")


@cache
def say(text: str, rate: int = 16000) -> np.ndarray:
    """espeak-ng speech as float32 at ``rate`` (cached: synthesis costs CPU)."""
    return espeak(text, rate=rate)
