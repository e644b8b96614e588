"""What every compressor gets and returns: one signature for all methods."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from leanserve.profiles.spec import ProfileSpec


@dataclass(frozen=True)
class BuildContext:
    spec: ProfileSpec
    base_dir: Path  # the base model's HF directory
    out_dir: Path  # an empty temporary directory; the job renames it into place when build returns
    calib: str | None  # --calib: a named set or a file; compressors load what they need


class Builder(Protocol):
    def __call__(self, ctx: BuildContext) -> dict[str, Any]:
        """Write a loadable HF model directory into ctx.out_dir; return facts for the manifest."""
