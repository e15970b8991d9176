from __future__ import annotations

import argparse
import dataclasses

import pytest

from server import config as c
from server.cli import main


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    c.add_arguments(ap)
    return ap.parse_args(argv)


def test_precedence_defaults_file_env_cli(tmp_path) -> None:
    f = tmp_path / "r.toml"
    f.write_text('[server]\nport = 9001\nmax_sessions = 3\nvad_stop_ms = 700\n')
    env = {"REJOINDER_MAX_SESSIONS": "5", "REJOINDER_LOG_CONTENT": "true"}
    cfg = c.load_config(parse(["--config", str(f), "--vad-stop-ms", "400"]), env=env)
    assert cfg.port == 9001  # file over default
    assert cfg.max_sessions == 5  # env over file
    assert cfg.vad_stop_ms == 400  # CLI over file
    assert cfg.log_content is True
    assert cfg.host == "127.0.0.1"  # default


def test_unknown_file_key_and_bad_values_are_rejected(tmp_path) -> None:
    f = tmp_path / "r.toml"
    f.write_text("colour = 'blue'\n")
    with pytest.raises(ValueError, match="unknown setting"):
        c.load_config(parse(["--config", str(f)]), env={})
    with pytest.raises(ValueError):
        c.load_config(parse(["--vad-threshold", "2"]), env={})


def test_session_may_lower_but_not_raise_limits() -> None:
    cfg = c.ServerConfig(max_turn_ms=30000, idle_timeout_s=60)
    got = c.clamp_session_limits(cfg, {"max_turn_ms": 5000, "idle_timeout_s": 999})
    assert got["max_turn_ms"] == 5000
    assert got["idle_timeout_s"] == 60


def test_serve_help_documents_every_setting(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for f in dataclasses.fields(c.ServerConfig):
        assert "--" + f.name.replace("_", "-") in out
