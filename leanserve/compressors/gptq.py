"""The gptq-4 / gptq-8 build: llm-compressor's GPTQModifier (W4A16_ASYM or W8A16, static activation order,
dampened Hessian), saved as compressed-tensors."""

from __future__ import annotations

from typing import Any

from leanserve.compressors.base import BuildContext
from leanserve.compressors.llmc import load, run_oneshot, weight_scheme
from leanserve.methods.gptq import Params

__all__ = ["Params", "build"]


def build(ctx: BuildContext) -> dict[str, Any]:
    from llmcompressor.modifiers.quantization import GPTQModifier

    params: Params = ctx.params
    model, tokenizer, calib = load(ctx)
    scheme, group = weight_scheme(model, params.scheme, params.group_size)
    modifier = GPTQModifier(config_groups={"group_0": scheme}, ignore=["lm_head"], dampening_frac=params.dampening_frac,
                            actorder=None if params.actorder == "none" else params.actorder, block_size=params.block_size)
    return {**run_oneshot(ctx, model, tokenizer, calib, [modifier]), "scheme": params.scheme, "group_size": group}
