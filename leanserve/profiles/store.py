"""Where artifacts live: `<home>/artifacts/<model>/<profile>/` with a `manifest.json`.

Write-once, by `leanserve compress` only; `serve` and `eval` record what they measure under
`<home>/results/` (leanserve/results.py), so the startup check sees exactly what was built.

A directory without a manifest is not an artifact: compressors write into a temporary sibling and
rename it into place only when complete, so a killed job never leaves something that loads.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from leanserve.profiles.spec import ProfileSpec

MANIFEST = "manifest.json"
Status = Literal["runtime", "built", "not built"]


class Manifest(BaseModel):
    """What a compressor job recorded about its artifact (issue: offline compressor jobs fill it in)."""

    model_config = ConfigDict(extra="allow")

    profile: str
    base_model: str
    files: dict[str, str] = {}  # relative path -> sha256
    size_bytes: int = 0


def model_slug(model: str) -> str:
    """A directory-safe name for a base model: a hub id or a local path's last part."""
    name = Path(model.rstrip("/")).name if Path(model).exists() else model
    return re.sub(r"[^A-Za-z0-9._-]+", "--", name).strip("-.") or "model"


def artifact_dir(home: Path, model: str, profile: str) -> Path:
    return home / "artifacts" / model_slug(model) / profile


def read_manifest(path: Path) -> Manifest | None:
    file = path / MANIFEST
    if not file.is_file():
        return None
    data: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
    return Manifest(**data)


def status(spec: ProfileSpec, home: Path, model: str) -> Status:
    if not spec.needs_artifact:
        return "runtime"
    return "built" if read_manifest(artifact_dir(home, model, spec.name)) else "not built"


def dir_size(path: Path) -> int:
    """Bytes on disk of every file below `path` (the figure the report calls 'size on disk')."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def sha256_file(path: Path) -> str:
    """The hash a manifest records per file (written by compressor jobs, checked at every start)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
