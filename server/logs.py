"""Structured logs: one JSON object per line, keyed by session and turn ids.

Audio is never logged. Transcripts are logged only when ``log_content`` is
enabled; callers pass them as ``content=...`` and :func:`log` drops them
otherwise.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOGGER = logging.getLogger("rejoinder")
_log_content = False


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(level: str = "info", *, log_content: bool = False) -> None:
    global _log_content
    _log_content = log_content
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(level.upper())
    LOGGER.propagate = False


def log(level: int, msg: str, *, content: str | None = None, **fields: Any) -> None:
    if not LOGGER.isEnabledFor(level):
        return
    if content is not None and _log_content:
        fields["content"] = content
    LOGGER.log(level, msg, extra={"fields": fields})


def now_ms() -> float:
    return time.monotonic() * 1000.0
