"""Print `podman build` arguments, one per line, that give pip inside the image build the same package
sources as pip here: a --build-arg per source setting (PIP_INDEX_URL, ...: the Dockerfile declares them)
and a read-only -v bind mount for each local directory or file they name.

Why: where the build can only reach a mirror or local wheel directories (no registry, no internet), the
image must resolve packages exactly as the host does. Reads `pip config list` and PIP_* variables (these
win, as they do for pip itself). Run with the interpreter whose pip you mean.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

KEYS = ("index-url", "extra-index-url", "find-links", "constraint", "cert")


def settings() -> dict[str, str]:
    """The source settings pip would use here: config files first, PIP_* variables over them."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True).stdout
    found: dict[str, str] = {}
    for line in out.splitlines():  # e.g. global.find-links='/opt/wheels'
        m = re.fullmatch(r"[\w:.]+?\.([\w-]+)='(.*)'", line.strip())
        if m and m.group(1) in KEYS:
            found[m.group(1)] = m.group(2)
    for key in KEYS:
        env = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if env:
            found[key] = env
    return found


def local_paths(value: str) -> list[Path]:
    """The existing local files or directories a setting names (file:// URLs or plain paths) and needs."""
    paths = []
    for item in value.split():
        path = Path(item.removeprefix("file://")) if item.startswith(("file://", "/")) else None
        if path is not None and path.exists():
            # A local index's pages link to ../../files/...: its parent goes along too.
            paths.append(path.parent if path.name == "simple" else path)
    return paths


def podman_args(found: dict[str, str]) -> list[str]:
    args: list[str] = []
    mounts: list[Path] = []
    for key, value in found.items():
        args += ["--build-arg", f"PIP_{key.upper().replace('-', '_')}={value}"]
        mounts += [p for p in local_paths(value) if p not in mounts]
    for path in mounts:
        args += ["-v", f"{path}:{path}:ro"]
    return args


if __name__ == "__main__":
    print("\n".join(podman_args(settings())))
