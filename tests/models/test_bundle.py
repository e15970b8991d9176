"""Bundle manifest validation (models/bundle.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.bundle import BundleError, load_manifest, write_manifest


def _bundle(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "g.onnx").write_bytes(b"graph bytes")
    (root / "tokenizer.json").write_text("{}")
    write_manifest(
        root, kind="textlm", name="t", config={"a": 1}, graphs={"prefill": "g.onnx"},
        files={"tokenizer": "tokenizer.json"},
    )  # fmt: skip
    return root


def _edit(root: Path, **changes: object) -> None:
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_valid_bundle_loads(tmp_path: Path) -> None:
    b = load_manifest(_bundle(tmp_path / "b"), kind="textlm")
    assert b.kind == "textlm" and b.name == "t" and b.config == {"a": 1}
    assert b.graph("prefill").read_bytes() == b"graph bytes"
    assert b.file("tokenizer").name == "tokenizer.json"
    with pytest.raises(BundleError, match="no graph 'decode'"):
        b.graph("decode")


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no manifest.json"):
        load_manifest(tmp_path)


def test_bad_checksum(tmp_path: Path) -> None:
    root = _bundle(tmp_path / "b")
    (root / "g.onnx").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="sha256 mismatch"):
        load_manifest(root)
    load_manifest(root, verify=False)


def test_missing_file(tmp_path: Path) -> None:
    root = _bundle(tmp_path / "b")
    (root / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="missing file tokenizer.json"):
        load_manifest(root)


def test_wrong_kind(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="expected a 'codec' bundle, found 'textlm'"):
        load_manifest(_bundle(tmp_path / "b"), kind="codec")


def test_wrong_version_and_format(tmp_path: Path) -> None:
    root = _bundle(tmp_path / "b")
    _edit(root, format_version=99)
    with pytest.raises(BundleError, match="format_version 99"):
        load_manifest(root)
    _edit(root, format_version=1, format="other")
    with pytest.raises(BundleError, match="'format'"):
        load_manifest(root)


def test_invalid_json_and_escape(tmp_path: Path) -> None:
    root = _bundle(tmp_path / "b")
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="invalid JSON"):
        load_manifest(root)
    root = _bundle(tmp_path / "c")
    _edit(root, graphs={"prefill": {"file": "../b/g.onnx"}})
    with pytest.raises(BundleError, match="outside the bundle"):
        load_manifest(root)
