"""The awq-4 build: llm-compressor's AWQModifier, then group-wise W4A16 (asymmetric), saved as compressed-tensors."""

from __future__ import annotations

from typing import Any

from leanserve.compressors.base import BuildContext
from leanserve.compressors.llmc import no_pinned_memory_without_cuda, quantize_with
from leanserve.methods.awq import Params

__all__ = ["Params", "build"]


def build(ctx: BuildContext) -> dict[str, Any]:
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform import AWQModifier

    params: Params = ctx.params
    with no_pinned_memory_without_cuda():
        return quantize_with(ctx, lambda scheme: [
            AWQModifier(duo_scaling=params.duo_scaling, n_grid=params.n_grid),
            QuantizationModifier(config_groups={"group_0": scheme}, ignore=["lm_head"])])
