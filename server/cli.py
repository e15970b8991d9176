"""The ``rejoinder`` command: ``rejoinder serve`` (``talk`` and ``bench`` come from clients/)."""

from __future__ import annotations

import argparse
import sys

from server import config as config_mod


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rejoinder", description="Rejoinder speech assistant server")
    sub = ap.add_subparsers(dest="command", required=True)
    sp = sub.add_parser(
        "serve",
        help="run the websocket server",
        description="Run the server. Settings: defaults < --config TOML < REJOINDER_* env < flags.",
    )
    config_mod.add_arguments(sp)
    sub.add_parser("talk", help="send a WAV question, print the reply and its latency", add_help=False)
    sub.add_parser("bench", help="latency benchmark (see `rejoinder bench --help`)", add_help=False)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("talk", "bench"):
        import importlib

        module = importlib.import_module("clients.talk" if argv[0] == "talk" else "clients.bench.cli")
        result: int = module.main(argv[1:])
        return result
    args = ap.parse_args(argv)
    if args.command == "serve":
        from server import logs
        from server.app import run

        try:
            cfg = config_mod.load_config(args)
        except (ValueError, OSError) as e:
            print(f"rejoinder serve: bad configuration: {e}", file=sys.stderr)
            return 2
        logs.configure(cfg.log_level, log_content=cfg.log_content)
        run(cfg)
        return 0
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
