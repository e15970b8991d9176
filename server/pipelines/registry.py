"""Build the pipelines a server offers, skipping those whose models are missing."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

from server.config import ServerConfig
from server.logs import log
from server.pipelines.base import Pipeline

# name -> "module:factory"; a factory takes the ServerConfig and returns a Pipeline
# or raises (FileNotFoundError, BundleError, ImportError...) when it cannot load.
FACTORIES: dict[str, str] = {
    "echo": "server.pipelines.echo:EchoPipeline",
    "cascade": "server.pipelines.cascade:CascadePipeline",
    "fused": "server.pipelines.fused:FusedPipeline",
}


def build_pipelines(cfg: ServerConfig) -> tuple[dict[str, Pipeline], dict[str, str]]:
    """Return (loaded pipelines by name, reasons for those skipped)."""
    loaded: dict[str, Pipeline] = {}
    skipped: dict[str, str] = {}
    for name in cfg.pipeline_list():
        spec = FACTORIES.get(name)
        if spec is None:
            skipped[name] = "unknown pipeline"
            continue
        modname, attr = spec.split(":")
        try:
            factory: Callable[..., Pipeline] = getattr(importlib.import_module(modname), attr)
            loaded[name] = factory(cfg) if name != "echo" else factory()
        except Exception as e:  # noqa: BLE001 - report, keep serving the others
            skipped[name] = f"{type(e).__name__}: {e}"
            log(logging.WARNING, "pipeline unavailable", pipeline=name, reason=skipped[name])
    return loaded, skipped
