"""Server configuration: one flat dataclass, four sources.

Precedence, lowest to highest: built-in defaults < config file (TOML, given
by ``--config`` or ``REJOINDER_CONFIG``) < environment (``REJOINDER_<NAME>``)
< command line (``--<name>``). Every field is a CLI flag with its help text,
so ``rejoinder serve --help`` documents every setting.

A session may lower the per-session limits with ``session.update`` but never
raise them (see :func:`clamp_session_limits`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(kw_only=True)
class ServerConfig:
    # network
    host: str = _f("127.0.0.1", "address to listen on")
    port: int = _f(8765, "TCP port (HTTP and websockets share it)")
    # pipelines and models
    pipelines: str = _f("auto", "comma-separated pipelines to offer (each must load, or /readyz says why); 'auto': every pipeline whose models are present, fused first")
    default_pipeline: str = _f("", "pipeline for new sessions (empty: the first available of --pipelines)")
    bundles_dir: str = _f(str(ROOT / "bundles"), "directory holding model bundles")
    device: str = _f("auto", "ONNX Runtime device: auto, cpu or cuda")
    ort_threads: int = _f(1, "intra-op threads per ONNX Runtime session")
    # audio
    input_sample_rate: int = _f(16000, "default client input rate (Hz)")
    output_sample_rate: int = _f(24000, "default reply audio rate (Hz)")
    output_lead_ms: float = _f(120.0, "how far ahead of real time reply audio is sent")
    # turn detection defaults
    vad_threshold: float = _f(0.5, "Silero VAD speech probability threshold")
    vad_start_ms: float = _f(64.0, "speech must last this long to start a turn")
    vad_stop_ms: float = _f(500.0, "silence that ends a turn (the cascade's hangover)")
    min_silence_ms: float = _f(96.0, "silence that confirms a learned end of turn")
    prefix_padding_ms: float = _f(300.0, "audio kept before speech start")
    barge_in_ms: float = _f(96.0, "user speech during a reply that interrupts it")
    barge_in_loud_ms: float = _f(64.0, "user speech during a reply that interrupts it when every VAD window of it is within barge_in_loud_db of the user's speech level (a faint echo is not); 0: off")
    barge_in_loud_db: float = _f(10.0, "how far under the user's speech level a window still counts as loud for barge_in_loud_ms")
    echo_tail_ms: float = _f(300.0, "after a reply completes, input audio during which speech still needs barge_in_ms to start a turn (the reply's echo may still arrive); 0: off")
    # limits (a session may lower, never raise)
    max_sessions: int = _f(16, "concurrent websocket sessions; more get HTTP 503")
    max_message_bytes: int = _f(262144, "largest accepted websocket message")
    max_turn_ms: float = _f(30000.0, "longest user turn before it is ended")
    idle_timeout_s: float = _f(120.0, "close a session that sends nothing for this long")
    max_session_s: float = _f(4 * 3600.0, "close a session after this long")
    input_queue_messages: int = _f(64, "inbound messages buffered per session")
    output_queue_messages: int = _f(256, "outbound messages buffered per session before it is dropped as a slow reader")
    audio_rate_factor: float = _f(4.0, "audio may arrive this many times faster than real time on average")
    audio_burst_s: float = _f(20.0, "seconds of audio a client may send at once (token bucket burst)")
    drain_timeout_s: float = _f(10.0, "on SIGTERM, time given to responses in flight")
    keepalive_s: float = _f(20.0, "websocket ping interval; a peer that does not answer within it is closed")
    auth_timeout_s: float = _f(5.0, "time a client without an Authorization header has to send its auth message")
    # security
    auth_token: str = _f("", "optional bearer token required in the Authorization header")
    allowed_origins: str = _f("", "comma-separated Origin allow-list for browsers (empty: any)")
    # observability
    log_level: str = _f("info", "debug, info, warning or error")
    log_content: bool = _f(False, "log transcripts (never audio); off by default")
    web_root: str = _f(str(ROOT / "clients" / "web"), "static files served at /")

    def pipeline_list(self) -> list[str]:
        if self.pipelines.strip() == "auto":
            return ["fused", "cascade", "echo"]
        return [p.strip() for p in self.pipelines.split(",") if p.strip()]

    @property
    def pipelines_required(self) -> bool:
        return self.pipelines.strip() != "auto"

    def origin_list(self) -> list[str]:
        return [o.strip() for o in self.allowed_origins.split(",") if o.strip()]

    def validate(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError("port must be 1..65535")
        if self.max_sessions < 1 or self.max_message_bytes < 1024:
            raise ValueError("max_sessions >= 1 and max_message_bytes >= 1024")
        if not 0.05 <= self.vad_threshold <= 0.99:
            raise ValueError("vad_threshold must be in [0.05, 0.99]")
        if self.echo_tail_ms < 0:
            raise ValueError("echo_tail_ms must be >= 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError("device must be auto, cpu or cuda")


FIELDS = {f.name: f for f in dataclasses.fields(ServerConfig)}


def _coerce(name: str, value: Any) -> Any:
    kind: Any = type(FIELDS[name].default)
    if kind is bool and isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return kind(value)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """Add one flag per setting; defaults are None so unset flags don't override."""
    ap.add_argument("--config", help="TOML config file (also REJOINDER_CONFIG)")
    for f in dataclasses.fields(ServerConfig):
        flag = "--" + f.name.replace("_", "-")
        helptext = f"{f.metadata['help']} (default: {f.default!r}; env REJOINDER_{f.name.upper()})"
        if isinstance(f.default, bool):
            ap.add_argument(flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction, help=helptext)
        else:
            ap.add_argument(flag, dest=f.name, default=None, type=type(f.default), help=helptext)


def load_config(
    args: argparse.Namespace | None = None, env: dict[str, str] | None = None
) -> ServerConfig:
    """Merge defaults, file, environment and CLI, in that order."""
    env = dict(os.environ) if env is None else env
    values: dict[str, Any] = {}
    path = getattr(args, "config", None) or env.get("REJOINDER_CONFIG")
    if path:
        data = tomllib.loads(Path(path).read_text())
        section = data.get("server", data)
        for k, v in section.items():
            if k not in FIELDS:
                raise ValueError(f"{path}: unknown setting {k!r}")
            values[k] = _coerce(k, v)
    for name in FIELDS:
        key = f"REJOINDER_{name.upper()}"
        if key in env:
            values[name] = _coerce(name, env[key])
    if args is not None:
        for name in FIELDS:
            v = getattr(args, name, None)
            if v is not None:
                values[name] = v
    cfg = ServerConfig(**values)
    cfg.validate()
    return cfg


# Per-session limits: name in session.update "limits" -> server field.
SESSION_LIMITS = {
    "max_turn_ms": "max_turn_ms",
    "idle_timeout_s": "idle_timeout_s",
    "max_session_s": "max_session_s",
    "max_message_bytes": "max_message_bytes",
}


def clamp_session_limits(cfg: ServerConfig, requested: dict[str, Any]) -> dict[str, float]:
    """Apply a session's requested limits: lower is accepted, higher is capped."""
    out: dict[str, float] = {}
    for key, fname in SESSION_LIMITS.items():
        server_value = float(getattr(cfg, fname))
        want = requested.get(key)
        out[key] = server_value if want is None else min(float(want), server_value)
    return out
