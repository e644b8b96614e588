"""AutoRound (llm-compressor's AutoRoundModifier, Intel's auto-round underneath): rounding and clipping of
group-wise weights tuned by signed gradient descent on each block's output; saved as compressed-tensors,
the same W4A16 format as gptq-4 and awq-4, so the same kernels serve it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from leanserve.methods import calibrated
from leanserve.methods.groups import grouped_block_bytes

# Symmetric presets only: llm-compressor 0.14's AutoRoundModifier copies auto-round's tuned scales into the
# checkpoint but not its zero points (its qparam mapping has no "zp"), so an asymmetric build is saved with
# the wrong zero points. Measured 2026-12-01 (CPU, first 2 WikiText-2 test windows through the server, 2 steps,
# 4 x 128 calibration): asymmetric 5.52x bf16 perplexity, symmetric 1.59x.
SymmetricScheme = Literal["W4A16", "W8A16"]


class Params(calibrated(128, 512)):  # type: ignore[misc]
    scheme: SymmetricScheme = Field("W4A16", description="compressed-tensors preset (symmetric: see SymmetricScheme)")
    group_size: int = Field(128, gt=0, description="weights per scale (columns); lowered to fit the model's widths")
    iters: int = Field(200, ge=0, description="SignSGD steps per decoder block (auto-round's default; 0 = RTN)")
    batch_size: int = Field(8, ge=1, description="calibration windows per tuning step")
    lr: float | None = Field(None, gt=0, description="learning rate; None = auto-round's 1/iters")
    torch_compile: bool = Field(False, description="torch.compile the tuning loop (needs a C++ compiler on CPU)")


def block_bytes(linears: list[tuple[int, int]], params: Params) -> float:
    return grouped_block_bytes(linears, params.scheme, params.group_size)
