"""The ``echo`` pipeline: a loopback check of microphone, speaker and audio path.

After the endpoint it plays the user's own utterance back; text input is
echoed as transcript. No model runs,
so it isolates transport, resampling, pacing and barge-in from inference.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np

from server.pipelines.base import (
    Pipeline,
    PipelineSession,
    ReplyAudio,
    ReplyEvent,
    ReplyText,
    Turn,
)
from server.worker import InferenceWorker

CHUNK = 1600  # 100 ms at 16 kHz


class EchoSession(PipelineSession):
    async def respond(self, turn: Turn) -> AsyncIterator[ReplyEvent]:
        if turn.text is not None:
            yield ReplyText(turn.text)
            return
        audio = turn.audio.astype(np.float32, copy=False)
        for i in range(0, len(audio), CHUNK):
            yield ReplyAudio(audio[i : i + CHUNK], 16000)


class EchoPipeline(Pipeline):
    name = "echo"
    description = "loopback check: plays your utterance back (no model)"

    def open_session(self, worker: InferenceWorker) -> PipelineSession:
        return EchoSession()
