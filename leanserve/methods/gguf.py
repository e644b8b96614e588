"""GGUF quantization with llama.cpp's own quantizer (q8_0 and the k-quants q4_k_m, q5_k_m)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from leanserve.methods import calibrated

# bits per weight as llama.cpp stores them (blocks with their scales): q8_0 is 34 bytes per 32 weights;
# the k-quant mixes are llama.cpp's own averages for LLaMA-shaped models (quantize --help)
BITS_PER_WEIGHT = {"q8_0": 8.5, "q4_k_m": 4.89, "q5_k_m": 5.69}


class Params(calibrated(32, 512)):  # type: ignore[misc]
    quant: Literal["q8_0", "q4_k_m", "q5_k_m"] = Field("q4_k_m", description="llama.cpp quantization type")
    source: str = Field("bf16", description="dense profile to quantize: bf16 (the base model), pruned, distilled, ...")
    imatrix: bool = Field(False, description="weigh rounding errors by calibration activations (k-quants)")
    intermediate: Literal["f32", "f16"] = Field("f32", description="precision of the GGUF that is quantized")


def block_bytes(linears: list[tuple[int, int]], params: Params) -> float:
    return sum(a * b for a, b in linears) * BITS_PER_WEIGHT[params.quant] / 8
