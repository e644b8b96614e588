"""LLM.int8() (bitsandbytes 8-bit with 16-bit outlier columns), applied while loading."""

from __future__ import annotations

from pydantic import Field

from leanserve.methods import MethodParams


class Params(MethodParams):
    threshold: float = Field(6.0, gt=0, description="activation magnitude above which a column runs in 16 bit")


def block_bytes(linears: list[tuple[int, int]], params: Params) -> float:
    """A byte per weight plus an fp32 scale per output row."""
    return sum(a * b + 4 * b for a, b in linears)
