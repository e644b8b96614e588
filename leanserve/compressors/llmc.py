"""What the GPTQ and AWQ jobs (gptq.py, awq.py) share: llm-compressor's `oneshot`, saved in
compressed-tensors format (what vLLM serves with its Marlin/Machete kernels).

AutoAWQ, named in the design card, is archived and pins an old torch; its algorithm lives on in
llm-compressor's AWQModifier, which is what runs here. llm-compressor is imported inside functions only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from leanserve.compressors.base import BuildContext, load_for_build
from leanserve.methods.groups import group_size_for


def weight_scheme(model: Any, preset: str, wanted_group: int) -> tuple[Any, int | None]:
    """compressed-tensors' preset (W4A16, W8A16, W4A16_ASYM), its group size fitted to the model."""
    from compressed_tensors.quantization import QuantizationStrategy, preset_name_to_scheme
    from torch import nn

    scheme = preset_name_to_scheme(preset, ["Linear"])
    if scheme.weights.strategy != QuantizationStrategy.GROUP:
        return scheme, None
    widths = [m.in_features for name, m in model.named_modules() if isinstance(m, nn.Linear) and "lm_head" not in name]
    group = group_size_for(widths, wanted_group)
    scheme.weights.group_size = group
    return scheme, group


def load(ctx: BuildContext) -> tuple[Any, Any, Any]:
    import torch

    # float32 on CPU (bf16 matmuls are slow there), bf16 on a GPU
    return load_for_build(ctx, torch.bfloat16 if torch.cuda.is_available() else torch.float32)


def run_oneshot(ctx: BuildContext, model: Any, tokenizer: Any, calib: Any, recipe: list[Any]) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot

    dataset = Dataset.from_dict({"input_ids": calib.samples, "attention_mask": [[1] * calib.seq_len] * len(calib.samples)})
    oneshot(model=model, dataset=dataset, recipe=recipe, max_seq_length=calib.seq_len,
            num_calibration_samples=len(calib.samples), shuffle_calibration_samples=False)
    # calibrated in float32 on CPU; stored like the base model, so embeddings and scales are bf16
    model.to(torch.bfloat16).save_pretrained(ctx.out_dir, save_compressed=True)
    tokenizer.save_pretrained(ctx.out_dir)
    return {"calibration": calib.describe(), "format": "compressed-tensors"}


def quantize_with(ctx: BuildContext, recipe: Callable[[Any], list[Any]]) -> dict[str, Any]:
    """The whole job of a weight-only method: load, fit the preset's group size to the model, run
    `recipe(scheme)` through oneshot, save; returns the manifest facts. ctx.params has scheme and group_size."""
    params: Any = ctx.params
    model, tokenizer, calib = load(ctx)
    scheme, group = weight_scheme(model, params.scheme, params.group_size)
    facts = run_oneshot(ctx, model, tokenizer, calib, recipe(scheme))
    return {**facts, "scheme": params.scheme, "group_size": group}


@contextlib.contextmanager
def no_pinned_memory_without_cuda() -> Iterator[None]:
    """llm-compressor 0.14's AWQ pins its cached calibration tensors in page-locked memory for fast
    GPU copies, unconditionally; a CPU-only torch cannot pin ("Cannot access accelerator device").
    Without CUDA there is nothing to copy to, so pinning is skipped for the duration of the job."""
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if torch.cuda.is_available():
        yield
        return
    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original  # type: ignore[method-assign]
