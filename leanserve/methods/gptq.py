"""GPTQ (llm-compressor's GPTQModifier): weight-only, group-wise, saved as compressed-tensors."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from leanserve.methods import calibrated
from leanserve.methods.groups import Scheme, grouped_block_bytes

# llm-compressor's ActivationOrdering: "weight" (alias "static") reorders columns by Hessian diagonal while
# solving and stores the usual layout, so kernels pay nothing; "group" keeps a g_idx per column (runtime
# permutation, not every kernel takes it); "none" quantizes columns in order.
ActOrder = Literal["weight", "group", "none"]


class Params(calibrated(128, 512)):  # type: ignore[misc]
    scheme: Scheme = Field("W4A16_ASYM", description="compressed-tensors preset: weight bits, activation bits, _ASYM")
    group_size: int = Field(128, gt=0, description="weights per scale (columns); lowered to fit the model's widths")
    actorder: ActOrder = Field("weight", description="activation ordering of the columns GPTQ solves (weight = static)")
    dampening_frac: float = Field(0.01, ge=0, lt=1, description="Hessian dampening, a fraction of its mean diagonal")
    block_size: int = Field(128, gt=0, description="columns GPTQ solves in one pass (speed only, not accuracy)")


def block_bytes(linears: list[tuple[int, int]], params: Params) -> float:
    return grouped_block_bytes(linears, params.scheme, params.group_size)
