"""AWQ (llm-compressor's AWQModifier, then group-wise quantization), saved as compressed-tensors."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from leanserve.methods import calibrated
from leanserve.methods.groups import Scheme, grouped_block_bytes


class Params(calibrated(128, 512)):  # type: ignore[misc]
    # 128 x 512 tokens is AutoAWQ's own calibration set (its pile-val default), the full set its results use
    scheme: Scheme = Field("W4A16_ASYM", description="compressed-tensors preset: weight bits, activation bits, _ASYM")
    group_size: int = Field(128, gt=0, description="weights per scale (columns); lowered to fit the model's widths")
    duo_scaling: bool | Literal["both"] = Field(
        True, description="scales from activations and weights (AutoAWQ's rule); both = search with and without")
    n_grid: int = Field(20, ge=1, description="scale exponents tried per mapping (AutoAWQ's grid)")


def block_bytes(linears: list[tuple[int, int]], params: Params) -> float:
    return grouped_block_bytes(linears, params.scheme, params.group_size)
