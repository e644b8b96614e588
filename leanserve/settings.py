"""One settings object for the server; CLI flags and LEANSERVE_* environment variables fill it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from leanserve.errors import LeanserveError


def default_home() -> Path:
    return Path(os.environ.get("LEANSERVE_HOME", "~/.cache/leanserve")).expanduser()


def data_root() -> Path | None:
    """The shared eval-data folder: $LEANSERVE_DATA, else ../shared/data beside the checkout or cwd."""
    env = os.environ.get("LEANSERVE_DATA")
    candidates = [Path(env)] if env else []
    repo = Path(__file__).resolve().parents[1]
    candidates += [repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data"]
    return next((c for c in candidates if c.is_dir()), None)


@dataclass(frozen=True)
class Settings:
    home: Path
    model: str | None = None  # None: the default model
    profile: str = "bf16"
    engine: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"  # auto, cpu, cuda
    dtype: str = "auto"  # auto, float32, bfloat16, float16
    max_model_len: int | None = None
    api_keys: tuple[str, ...] = ()  # any of these opens every route but /health; empty: no auth
    served_model_name: str | None = None  # the `model` clients send; default: the model's slug
    max_body_bytes: int = 4 * 1024 * 1024
    max_n: int = 8
    trust_remote_code: bool = False
    log_level: str = "info"
    vram_budget: int | None = None  # bytes of GPU memory to stay within (see leanserve.fit)
    public_metrics: bool = False  # /metrics without the key (a scraper on a private network)
    max_queue: int | None = None  # generations running or waiting at once; past it 429 (None: unbounded)
    request_timeout: float | None = None  # seconds a request may run before it is aborted with 504
    body_timeout: float = 30.0  # seconds a generation request's body may take to arrive; past it 408
    header_timeout: float = 10.0  # seconds a connection may take to send a request's headers; past it closed
    shutdown_grace: float = 30.0  # seconds running requests get to finish after SIGTERM
    skip_verify: bool = False  # skip the sha256 check of an artifact's files at startup


def read_api_keys(path: Path) -> tuple[str, ...]:
    """Keys from a file: one per line; blank lines and lines starting with `#` are ignored (a `#` inside
    a key is part of it, so any generated key works)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LeanserveError(f"cannot read the API keys file {path}: {exc}", param="api_keys_file") from exc
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))
