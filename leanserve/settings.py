"""One settings object for the server; CLI flags and LEANSERVE_* environment variables fill it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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
    api_key: str | None = None
    served_model_name: str | None = None  # the `model` clients send; default: the model's slug
    max_body_bytes: int = 4 * 1024 * 1024
    max_n: int = 8
    trust_remote_code: bool = False
    log_level: str = "info"
    vram_budget: int | None = None  # bytes of GPU memory to stay within (see leanserve.fit)
