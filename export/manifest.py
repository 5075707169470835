"""`manifest.json`: what an export directory holds, where it came from, and the parity measured at export."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
SEARCH_FILE = "search.json"  # tuned search settings, written later by `llmql tune`; belongs with the export
FORMAT = "llmql-export/1"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_versions(path: Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return {"ir_version": int(model.ir_version), "opset": int(opset)}


def file_entries(directory: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file in the export (the manifest itself excluded)."""
    out = {}
    for path in sorted(Path(directory).rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            out[str(path.relative_to(directory))] = {"sha256": sha256(path), "bytes": path.stat().st_size}
    return out


def write_manifest(directory: Path, payload: dict[str, Any]) -> Path:
    path = Path(directory) / MANIFEST
    path.write_text(json.dumps({"format": FORMAT, **payload, "files": file_entries(directory)}, indent=2) + "\n")
    return path


def read_manifest(directory: Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; is {directory} an llmql export (llmql-export MODEL OUT)?")
    payload = json.loads(path.read_text())
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path}: format {payload.get('format')!r}, expected {FORMAT!r}")
    return payload
