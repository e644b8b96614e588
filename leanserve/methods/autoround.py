"""AutoRound (llm-compressor's AutoRoundModifier, Intel's auto-round underneath): rounding and clipping of
group-wise weights tuned by signed gradient descent on each block's output; saved as compressed-tensors,
the same W4A16 format as gptq-4 and awq-4, so the same kernels serve it."""

from __future__ import annotations

from pydantic import Field

from leanserve.methods import calibrated
from leanserve.methods.groups import Scheme, grouped_block_bytes


class Params(calibrated(128, 512)):  # type: ignore[misc]
    scheme: Scheme = Field("W4A16_ASYM", description="compressed-tensors preset: weight bits, activation bits, _ASYM")
    group_size: int = Field(128, gt=0, description="weights per scale (columns); lowered to fit the model's widths")
    iters: int = Field(200, ge=0, description="SignSGD steps per decoder block (auto-round's default; 0 = RTN)")
    batch_size: int = Field(8, ge=1, description="calibration windows per tuning step")
    lr: float | None = Field(None, gt=0, description="learning rate; None = auto-round's 1/iters")
    torch_compile: bool = Field(False, description="torch.compile the tuning loop (needs a C++ compiler on CPU)")


def block_bytes(linears: list[tuple[int, int]], params: Params) -> float:
    return grouped_block_bytes(linears, params.scheme, params.group_size)
