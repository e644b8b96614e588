"""Layer-drop distillation: a student with every `keep_every`-th block of the teacher (and the last)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from pydantic import Field

from leanserve.methods import calibrated

if TYPE_CHECKING:
    from leanserve.fit import ModelShape


class Params(calibrated(64, 256)):  # type: ignore[misc]
    keep_every: int = Field(2, ge=1, description="keep one block in this many (the last is always kept)")
    steps: int = Field(200, ge=0, description="training steps (one calibration window each)")
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate")
    checkpoint_every: int = Field(50, ge=1, description="steps between healing checkpoints (a killed job resumes there)")
    ce_weight: float = Field(0.0, ge=0, description="weight of next-token cross-entropy added to the KL loss")


def kept_layers(n_layers: int, keep_every: int) -> list[int]:
    """Every keep_every-th block from the first, plus the last (it shapes the output distribution)."""
    keep = list(range(0, n_layers, keep_every))
    return keep if keep[-1] == n_layers - 1 else [*keep, n_layers - 1]


def served_shape(shape: ModelShape, params: Params) -> ModelShape:
    return replace(shape, layers=len(kept_layers(shape.layers, params.keep_every)))
