"""The autoround-4 build: llm-compressor's AutoRoundModifier (group-wise W4A16), saved as compressed-tensors."""

from __future__ import annotations

from typing import Any

from leanserve.compressors.base import BuildContext
from leanserve.compressors.llmc import quantize_with
from leanserve.methods.autoround import Params

__all__ = ["Params", "build"]


def build(ctx: BuildContext) -> dict[str, Any]:
    from llmcompressor.modifiers.autoround import AutoRoundModifier

    params: Params = ctx.params
    return quantize_with(ctx, lambda scheme: [AutoRoundModifier(
        config_groups={"group_0": scheme}, ignore=["lm_head"], iters=params.iters, batch_size=params.batch_size,
        lr=params.lr, enable_torch_compile=params.torch_compile)])
