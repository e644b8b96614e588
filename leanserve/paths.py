"""Where leanserve keeps its files and finds the shared eval data: one place for every command.

Neither the server nor the compressors own these: `serve`, `compress`, `eval` and `fit` all ask here.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = "~/.cache/leanserve"


def default_home() -> Path:
    """$LEANSERVE_HOME, else ~/.cache/leanserve: models/, artifacts/ (compress), results/ (serve, eval), profiles/."""
    return Path(os.environ.get("LEANSERVE_HOME", DEFAULT_HOME)).expanduser()


def data_root() -> Path | None:
    """The shared eval-data folder: $LEANSERVE_DATA, else ../shared/data beside the checkout or cwd."""
    env = os.environ.get("LEANSERVE_DATA")
    candidates = [Path(env)] if env else []
    repo = Path(__file__).resolve().parents[1]
    candidates += [repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data"]
    return next((c for c in candidates if c.is_dir()), None)
