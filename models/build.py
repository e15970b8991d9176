"""Setup-time build of artifacts that are derived from installed packages.

``python -m models.build`` runs every registered step. Steps are idempotent:
they skip work whose outputs already exist. Nothing here trains a model;
trained weights are committed and rebuilt by their own documented commands.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

# Each entry: module path exposing ``build(quiet: bool) -> None``.
STEPS: list[str] = ["models.asr", "models.codec"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    for modname in STEPS:
        step: Callable[[bool], None] = importlib.import_module(modname).build
        step(args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
