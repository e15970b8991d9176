"""eval_fused's phase shift: an item cut inside its leading silence keeps its labels on the audio."""

from __future__ import annotations

import numpy as np
import pytest

from models.training.eval_fused import shift_item


def test_shift_item_moves_every_position_with_the_audio() -> None:
    pcm = np.arange(40000, dtype=np.int16)
    it = {"pcm": pcm, "mel": np.zeros((250, 80)), "start": 3000, "end": 30000, "pause": (12000, 18000),
          "text": "what is one plus one"}
    s = shift_item(it, 160)
    assert s["pcm"][0] == pcm[160] and len(s["pcm"]) == len(pcm) - 160 and "mel" not in s
    assert (s["start"], s["end"], s["pause"]) == (2840, 29840, (11840, 17840))
    assert s["pcm"][s["end"]] == pcm[it["end"]] and s["pcm"][s["pause"][0]] == pcm[12000]
    assert shift_item(dict(it, pause=None), 480)["pause"] is None
    assert shift_item(it, 0) is it
    with pytest.raises(ValueError):
        shift_item(it, 2400)  # past the speech start of some items: not a phase any more
    with pytest.raises(ValueError):
        shift_item(dict(it, start=100), 160)
