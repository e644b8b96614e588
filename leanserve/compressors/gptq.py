"""The gptq-4 / gptq-8 build: llm-compressor's GPTQModifier (W4A16_ASYM or W8A16, static activation order,
dampened Hessian), saved as compressed-tensors."""

from __future__ import annotations

from typing import Any

from leanserve.compressors.base import BuildContext
from leanserve.compressors.llmc import quantize_with
from leanserve.methods.gptq import Params

__all__ = ["Params", "build"]


def build(ctx: BuildContext) -> dict[str, Any]:
    from llmcompressor.modifiers.quantization import GPTQModifier

    params: Params = ctx.params
    actorder = None if params.actorder == "none" else params.actorder
    return quantize_with(ctx, lambda scheme: [GPTQModifier(
        config_groups={"group_0": scheme}, ignore=["lm_head"], dampening_frac=params.dampening_frac,
        actorder=actorder, block_size=params.block_size)])
