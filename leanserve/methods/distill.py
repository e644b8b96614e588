"""Layer-drop distillation: a student with some of the teacher's blocks, healed against the teacher.

Which blocks go is `layer_choice`: "influence" drops the `drop_layers` blocks with the lowest block
influence on calibration text (ShortGPT), "every" keeps one block in `keep_every` (and the last). Each
choice has its own knob and refuses the other's, so a profile never carries a setting the job ignores.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from leanserve.errors import ProfileError
from leanserve.methods import healed

if TYPE_CHECKING:
    from leanserve.fit import ModelShape


class Params(healed(256, 256)):  # type: ignore[misc]
    steps: int = Field(20_000, ge=0, description="healing steps at most (one calibration window each); "
                                                 "heal_minutes usually stops the loop first on a CPU")
    layer_choice: Literal["influence", "every"] = Field(
        "influence", description="influence: drop the drop_layers blocks of lowest block influence; every: keep one in keep_every")
    drop_layers: int = Field(4, ge=0, description="blocks to drop by block influence (layer_choice=influence; 0 otherwise)")
    keep_every: int = Field(0, ge=0, description="keep one block in this many, plus the last (layer_choice=every; 0 otherwise)")
    ce_weight: float = Field(0.0, ge=0, description="weight of next-token cross-entropy added to the KL loss")

    @model_validator(mode="after")
    def _one_choice(self) -> Params:
        """Each layer_choice takes its own knob; the other one must stay 0, or the job would ignore it."""
        if self.layer_choice == "influence":
            if self.keep_every:
                raise ValueError(f"keep_every={self.keep_every} applies to layer_choice='every' only; with "
                                 "layer_choice='influence' say how many blocks to drop with drop_layers")
            if self.drop_layers < 1:
                raise ValueError("drop_layers=0 drops no block; pass drop_layers >= 1 (the default is 4)")
        else:
            if self.drop_layers:
                raise ValueError(f"drop_layers={self.drop_layers} applies to layer_choice='influence' only; with "
                                 "layer_choice='every' the blocks follow from keep_every: pass drop_layers=0")
            if self.keep_every < 2:
                raise ValueError("layer_choice='every' needs keep_every >= 2 (keep one block in that many)")
        return self


def kept_layers(n_layers: int, keep_every: int) -> list[int]:
    """Every keep_every-th block from the first, plus the last (it shapes the output distribution)."""
    keep = list(range(0, n_layers, keep_every))
    return keep if keep[-1] == n_layers - 1 else [*keep, n_layers - 1]


def kept_count(n_layers: int, params: Params) -> int:
    """How many blocks the student has; refuses a drop that leaves none."""
    if params.layer_choice == "every":
        return len(kept_layers(n_layers, params.keep_every))
    if params.drop_layers >= n_layers:
        raise ProfileError(f"drop_layers={params.drop_layers} leaves no block of this model's {n_layers}; "
                           f"pass at most {n_layers - 1}", param="drop_layers")
    return n_layers - params.drop_layers


def served_shape(shape: ModelShape, params: Params) -> ModelShape:
    return replace(shape, layers=kept_count(shape.layers, params))
