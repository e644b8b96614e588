"""GPTQ (llm-compressor's GPTQModifier): weight-only, group-wise, saved as compressed-tensors."""

from __future__ import annotations

from pydantic import Field

from leanserve.methods import calibrated
from leanserve.methods.groups import Scheme, grouped_block_bytes


class Params(calibrated(128, 512)):  # type: ignore[misc]
    scheme: Scheme = Field("W4A16", description="compressed-tensors preset: weight bits, activation bits, _ASYM")
    group_size: int = Field(128, gt=0, description="weights per scale (columns); lowered to fit the model's widths")
    dampening_frac: float = Field(0.01, ge=0, lt=1, description="Hessian dampening, a fraction of its mean diagonal")


def block_bytes(linears: list[tuple[int, int]], params: Params) -> float:
    return grouped_block_bytes(linears, params.scheme, params.group_size)
