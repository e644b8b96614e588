"""Group-wise weight quantization as GPTQ and AWQ store it (compressed-tensors pack-quantized).

Shared by the planner (bytes it will take) and the compressor jobs (the group size they quantize
with), so both use one rule.
"""

from __future__ import annotations

import math
from typing import Literal

GROUP_SIZES = (128, 64, 32)  # the first that divides every quantized layer's input width is used
# compressed-tensors weight-only presets: 4 or 8 bits, 16-bit activations, _ASYM with a zero point
Scheme = Literal["W4A16", "W4A16_ASYM", "W8A16"]


def group_size_for(in_features: list[int], wanted: int) -> int:
    """`wanted` if it divides every layer's columns, else the largest smaller one from GROUP_SIZES that
    does. SmolLM2-135M (hidden 576 = 4.5 x 128) gets 64; 7B-class models (4096, 11008) keep 128."""
    for g in (wanted, *(g for g in GROUP_SIZES if g < wanted)):
        if all(n % g == 0 for n in in_features):
            return g
    raise ValueError(f"no group size in {GROUP_SIZES} divides every layer width {sorted(set(in_features))}")


def scheme_bits(scheme: str) -> int:
    """Weight bits of a preset: W4A16 -> 4."""
    return int(scheme[1:].split("A", 1)[0])


def grouped_block_bytes(linears: list[tuple[int, int]], scheme: str, wanted_group: int) -> float:
    """bits/8 per weight plus a 16-bit scale per group of each row (and a packed zero point per group
    for asymmetric schemes)."""
    bits = scheme_bits(scheme)
    group = group_size_for([a for a, _ in linears], wanted_group)
    per_group = 2 + (bits / 8 if scheme.endswith("_ASYM") else 0)
    return sum(a * b * bits / 8 + b * math.ceil(a / group) * per_group for a, b in linears)
