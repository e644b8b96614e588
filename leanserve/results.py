"""What `serve` and `eval` measured: `<home>/results/<model>/<profile>/`, apart from the artifact store.

The artifact store (`<home>/artifacts/`) is written once, by `compress`, and checked file by file at
every start; nothing else writes there. How a profile loaded (`load-<engine>.json`, written by `serve`)
and eval results (`evals-<engine>.json`, written by `eval`) land here instead; no loader reads this
folder, and `leanserve report` reads it by default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from leanserve.profiles.store import model_slug

EVALS_GLOB = "evals-*.json"


def results_dir(home: Path, model: str, profile: str) -> Path:
    return home / "results" / model_slug(model) / profile


def load_facts_path(home: Path, model: str, profile: str, engine: str) -> Path:
    return results_dir(home, model, profile) / f"load-{engine}.json"


def evals_path(home: Path, model: str, profile: str, engine: str) -> Path:
    return results_dir(home, model, profile) / f"evals-{engine}.json"


def find_evals(home: Path, model: str) -> list[Path]:
    """Every profile's eval results for `model` under home, in profile order."""
    return sorted((home / "results" / model_slug(model)).glob(f"*/{EVALS_GLOB}"))


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Atomically (temp file, then rename): a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)
    return path
