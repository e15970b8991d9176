"""The JSON Schema shared by the docs, the server and the tests."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA_PATH = Path(__file__).with_name("schema.json")


@cache
def schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return data


PROTOCOL_VERSION: int = schema()["protocol_version"]


@cache
def validator(direction: str, event_type: str) -> Draft202012Validator | None:
    """Validator for one event type; ``direction`` is "client" or "server"."""
    entry = schema()[direction].get(event_type)
    if entry is None:
        return None
    full = {"$defs": schema()["$defs"], **entry}
    return Draft202012Validator(full)


def event_types(direction: str) -> list[str]:
    return sorted(schema()[direction])


def first_error(direction: str, event: dict[str, Any]) -> str | None:
    """Return a one-line description of the first schema violation, or None."""
    v = validator(direction, str(event.get("type")))
    if v is None:
        return f"unknown {direction} event type {event.get('type')!r}"
    for err in sorted(v.iter_errors(event), key=lambda e: list(e.path)):
        where = "/".join(str(p) for p in err.path) or "(event)"
        return f"{where}: {err.message}"
    return None
