"""bitsandbytes NF4, applied while loading (QLoRA's 4-bit NormalFloat)."""

from __future__ import annotations

import math

from pydantic import Field

from leanserve.methods import MethodParams

BLOCK = 64  # weights per absmax


class Params(MethodParams):
    double_quant: bool = Field(True, description="quantize the absmax constants too (8-bit, per 256 blocks)")


def block_bytes(linears: list[tuple[int, int]], params: Params) -> float:
    """4 bits per weight plus an absmax per 64 weights: fp32, or a byte (+ an fp32 per 256) double-quantized."""
    absmax = 1 + 4 / 256 if params.double_quant else 4
    return sum(math.ceil(a * b / 2) + math.ceil(a * b / BLOCK) * absmax for a, b in linears)
