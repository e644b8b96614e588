"""Checks before anything is loaded: what the server is about to read must be safe and be what was built.

- Weights must be safetensors or GGUF: pickle formats (`*.bin`, `*.pt`, ...) can run code when unpickled.
- A model that ships its own code (`auto_map` in config.json) needs `--trust-remote-code`.
- An artifact's files must match the sha256 its manifest recorded, and nothing may have been added
  (only `compress` writes the artifact store; results live under <home>/results/).

Every refusal is a ProfileError (the CLI exits 2 with its message); nothing here imports torch.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from leanserve.errors import ProfileError
from leanserve.profiles.store import MANIFEST, Manifest, sha256_file

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def check_gguf(file: Path) -> None:
    """A .gguf must start with the GGUF magic: llama.cpp is then told to load it, never a stray file."""
    with file.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ProfileError(f"{file} is not a GGUF file (it does not start with the GGUF magic bytes)",
                               param="model")


def check_weight_format(path: Path) -> None:
    """Refuse a model directory whose weights are not safetensors or GGUF (before any loader sees it)."""
    ggufs = [path] if path.is_file() and path.suffix == ".gguf" else sorted(path.glob("*.gguf")) if path.is_dir() else []
    for file in ggufs:
        check_gguf(file)
    if ggufs or any(path.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES) if path.is_dir() else []
    if pickled:
        raise ProfileError(
            f"{path} has only pickle weights ({', '.join(pickled[:3])}); leanserve loads safetensors only, because "
            "unpickling can run arbitrary code. Convert the checkpoint to safetensors (e.g. "
            "`model.save_pretrained(dir, safe_serialization=True)` in a sandbox you trust) and serve that.",
            param="model",
        )
    raise ProfileError(f"{path} has no *.safetensors weights", param="model")


def check_remote_code(path: Path, trust_remote_code: bool) -> None:
    """A config with `auto_map` means the checkpoint brings Python code; run it only when asked."""
    config = path / "config.json"
    if trust_remote_code or not config.is_file():
        return
    try:
        auto_map = json.loads(config.read_text(encoding="utf-8")).get("auto_map")
    except (ValueError, AttributeError) as exc:
        raise ProfileError(f"{config} is not valid JSON: {exc}", param="model") from exc
    if auto_map:
        raise ProfileError(
            f"{path} needs its own model code ({', '.join(sorted(auto_map))} in config.json's auto_map), which "
            "leanserve does not run by default. Read that code, then pass --trust-remote-code if you trust it.",
            param="model",
        )


def verify_artifact(path: Path, manifest: Manifest) -> None:
    """Every file the manifest lists has its recorded sha256, and no other file is present.

    Hashed at every start (about 1 GB/s on one core: seconds for a 4-bit 7B artifact); `--skip-verify`
    skips it. Not cached by mtime/size, since whoever can rewrite a file can restore those too."""
    if not manifest.files:
        raise ProfileError(f"{path / MANIFEST} lists no files and their sha256; rebuild the artifact with "
                           f"leanserve compress --profile {manifest.profile} --force", param="profile")
    started = time.perf_counter()
    present = {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()} - {MANIFEST}
    extra = sorted(present - set(manifest.files))
    if extra:
        raise ProfileError(f"artifact {path} has files its manifest does not list: {', '.join(extra[:5])}; "
                           "refusing to load it (remove them or rebuild with --force)", param="profile")
    total = 0
    for rel, expected in sorted(manifest.files.items()):
        file = path / rel
        if not file.is_file():
            raise ProfileError(f"artifact {path} is missing {rel}, which its manifest lists; rebuild it with "
                               f"leanserve compress --profile {manifest.profile} --force", param="profile")
        size = file.stat().st_size
        log.info("verifying %s (%.0f MB)", rel, size / 1e6)
        if sha256_file(file) != expected:
            raise ProfileError(f"artifact file {file} does not match the sha256 in its manifest (changed or "
                               f"corrupted since it was built); refusing to load it. Rebuild it with leanserve "
                               f"compress --profile {manifest.profile} --force", param="profile")
        total += size
    log.info("artifact %s verified: %d files, %.0f MB in %.1fs", path, len(manifest.files), total / 1e6,
             time.perf_counter() - started)
