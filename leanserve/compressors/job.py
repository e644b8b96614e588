"""Run one compressor job: build into a temporary sibling directory, write the manifest, rename.

The rename is the commit point: a killed job leaves only a `.NAME.tmp-*` directory, which nothing
loads (the server needs `manifest.json` in the artifact directory itself).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from leanserve import models
from leanserve.compressors import get_builder
from leanserve.compressors.base import BuildContext
from leanserve.errors import ProfileError
from leanserve.profiles.spec import ProfileSpec
from leanserve.profiles.store import MANIFEST, artifact_dir, dir_size, read_manifest, sha256_file

log = logging.getLogger(__name__)
LIBRARIES = ("leanserve", "torch", "transformers", "llmcompressor", "compressed-tensors", "bitsandbytes", "accelerate",
             "llama_cpp_python", "gguf")


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def weights_sha256(model_dir: Path) -> str:
    """One digest over the model's weight files (name and content), to tell base models apart."""
    h = hashlib.sha256()
    for p in sorted(model_dir.glob("*.safetensors")):
        h.update(p.name.encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Installed versions of `names` (those not installed are left out)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def peak_memory_bytes() -> dict[str, int]:
    """Peak host RSS of this process (Linux reports KiB) and, on a GPU, torch's peak allocation."""
    peak = {"host_rss_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    try:
        import torch

        if torch.cuda.is_available():
            peak["gpu_allocated_peak"] = int(torch.cuda.max_memory_allocated())
    except ImportError:
        pass
    return peak


def run_job(spec: ProfileSpec, model: str | None, home: Path, calib: str | None = None, force: bool = False) -> Path:
    """Build `spec`'s artifact for `model` under home; return the artifact directory."""
    if spec.build is None:
        raise ProfileError(f"profile {spec.name!r} is applied while loading ({spec.method}); there is nothing to build. "
                           f"Serve it directly: leanserve serve --profile {spec.name}", param="profile")
    base_name = model or models.DEFAULT_MODEL
    final = artifact_dir(home, base_name, spec.name)
    if read_manifest(final) is not None and not force:
        raise ProfileError(f"{final} already holds a built {spec.name!r}; pass --force to rebuild it", param="profile")
    builder = get_builder(spec.build)
    base_dir = models.resolve(model, home)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{spec.name}.tmp-"))
    started = time.perf_counter()
    try:
        params = spec.build_params
        facts: dict[str, Any] = builder(BuildContext(spec=spec, base_dir=base_dir, out_dir=tmp, calib=calib, params=params))
        manifest = {
            "profile": spec.name,
            "spec": spec.model_dump(),
            "params": params.model_dump(),  # every parameter the job ran with, defaults included
            "base_model": base_name,
            "base_model_dir": str(base_dir),
            "base_model_sha256": weights_sha256(base_dir),
            "libraries": library_versions(),
            "machine": platform.machine(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "wall_time_s": round(time.perf_counter() - started, 2),
            "peak_memory": peak_memory_bytes(),
            "size_bytes": dir_size(tmp),
            "files": file_hashes(tmp),
            **facts,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        if final.exists():  # --force: move the old one aside only now that the new one is complete
            old = final.with_name(f".{spec.name}.old-{int(time.time())}")
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("built %s in %.1fs at %s", spec.name, time.perf_counter() - started, final)
    return final
