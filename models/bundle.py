"""Model bundles: a directory with ``manifest.json`` and the graphs it lists.

A bundle is what a pipeline loads. The server never cares who trained it:
anyone can ship a bigger model by writing a manifest in this format (see
``docs/bundle.md``). :func:`load_manifest` validates everything up front and
raises :class:`BundleError` with a precise message on any mismatch.

Manifest (format version 1)::

    {
      "format": "rejoinder-bundle",
      "format_version": 1,
      "kind": "textlm" | "codec" | "fused" | ...,
      "name": "builtin-textlm",
      "config": {...},                 # kind-specific, free-form
      "graphs": {"decode": {"file": "decode.onnx", "sha256": "...",
                            "built": false}},
      "files": {"tokenizer": {"file": "tokenizer.json", "sha256": "..."}},
      "licenses": ["MIT"],
      "rebuild": "make-free command that rebuilds the committed files"
    }

A graph or file with ``"built": true`` is generated at setup time by
``python -m models.build`` instead of being committed; its checksum is then
verified against the ``sha256`` recorded by the build, if present.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "rejoinder-bundle"
FORMAT_VERSION = 1


class BundleError(ValueError):
    """The bundle is missing, malformed or does not match its manifest."""


@dataclass(frozen=True)
class Bundle:
    """A validated bundle: its directory, parsed manifest and resolved paths."""

    root: Path
    kind: str
    name: str
    config: dict[str, Any]
    graphs: dict[str, Path]
    files: dict[str, Path]
    manifest: dict[str, Any] = field(repr=False)

    def graph(self, name: str) -> Path:
        try:
            return self.graphs[name]
        except KeyError:
            raise BundleError(f"{self.root}: manifest has no graph {name!r}") from None

    def file(self, name: str) -> Path:
        try:
            return self.files[name]
        except KeyError:
            raise BundleError(f"{self.root}: manifest has no file {name!r}") from None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _entries(root: Path, manifest: dict[str, Any], key: str, verify: bool) -> dict[str, Path]:
    section = manifest.get(key, {})
    if not isinstance(section, dict):
        raise BundleError(f"{root}: '{key}' must be an object")
    out: dict[str, Path] = {}
    for name, entry in section.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise BundleError(f"{root}: {key}.{name} needs a 'file' string")
        path = (root / entry["file"]).resolve()
        if root.resolve() not in path.parents:
            raise BundleError(f"{root}: {key}.{name} points outside the bundle")
        if not path.is_file():
            hint = " (run `python -m models.build`)" if entry.get("built") else ""
            raise BundleError(f"{root}: {key}.{name}: missing file {entry['file']}{hint}")
        want = entry.get("sha256")
        if verify and want is not None:
            got = sha256_of(path)
            if got != want:
                raise BundleError(
                    f"{root}: {key}.{name}: sha256 mismatch for {entry['file']} "
                    f"(manifest {want[:12]}..., file {got[:12]}...)"
                )
        out[name] = path
    return out


def load_manifest(
    root: str | os.PathLike[str], *, kind: str | None = None, verify: bool = True
) -> Bundle:
    """Read and validate ``root/manifest.json``.

    ``kind`` (if given) must match the manifest's kind. ``verify`` checks
    every listed file's sha256.
    """
    root = Path(root)
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise BundleError(f"{root}: no manifest.json (is this a bundle directory?)")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{mpath}: invalid JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath}: top level must be an object")
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{mpath}: 'format' must be {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{mpath}: format_version {manifest.get('format_version')!r} is not "
            f"supported (this server reads {FORMAT_VERSION})"
        )
    mkind = manifest.get("kind")
    if not isinstance(mkind, str):
        raise BundleError(f"{mpath}: 'kind' must be a string")
    if kind is not None and mkind != kind:
        raise BundleError(f"{mpath}: expected a {kind!r} bundle, found {mkind!r}")
    config = manifest.get("config", {})
    if not isinstance(config, dict):
        raise BundleError(f"{mpath}: 'config' must be an object")
    return Bundle(
        root=root,
        kind=mkind,
        name=str(manifest.get("name", root.name)),
        config=config,
        graphs=_entries(root, manifest, "graphs", verify),
        files=_entries(root, manifest, "files", verify),
        manifest=manifest,
    )


def write_manifest(
    root: str | Path,
    *,
    kind: str,
    name: str,
    config: dict[str, Any],
    graphs: dict[str, str],
    files: dict[str, str] | None = None,
    built: set[str] | None = None,
    licenses: list[str] | None = None,
    rebuild: str = "",
) -> Path:
    """Write a manifest for files already present in ``root`` (checksums computed here)."""
    root = Path(root)
    built = built or set()

    def entry(name_: str, file: str) -> dict[str, Any]:
        e: dict[str, Any] = {"file": file, "sha256": sha256_of(root / file)}
        if name_ in built:
            e["built"] = True
        return e

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "name": name,
        "config": config,
        "graphs": {k: entry(k, v) for k, v in graphs.items()},
        "files": {k: entry(k, v) for k, v in (files or {}).items()},
        "licenses": licenses or [],
        "rebuild": rebuild,
    }
    path = root / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path
