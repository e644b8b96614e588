"""Structured MLP pruning: every layer keeps the same number of intermediate channels."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from pydantic import Field

from leanserve.methods import healed

if TYPE_CHECKING:
    from leanserve.fit import ModelShape

CHANNEL_MULTIPLE = 32  # kernels (and vLLM's) like dimensions that are multiples of 32


class Params(healed(128, 512)):  # type: ignore[misc]
    mlp_keep: float = Field(0.75, gt=0, le=1, description="share of MLP channels kept (rounded to a multiple of 32)")
    heal_steps: int = Field(20_000, ge=0, description="distillation steps against the unpruned model afterwards at "
                                                      "most (0: none); heal_minutes usually stops the loop first on a CPU")


def kept_width(intermediate: int, mlp_keep: float) -> int:
    """The intermediate size after pruning: the kept share, rounded to a multiple of CHANNEL_MULTIPLE."""
    return max(CHANNEL_MULTIPLE, round(intermediate * mlp_keep / CHANNEL_MULTIPLE) * CHANNEL_MULTIPLE)


def served_shape(shape: ModelShape, params: Params) -> ModelShape:
    return replace(shape, intermediate=kept_width(shape.intermediate, params.mlp_keep))
