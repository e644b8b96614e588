"""What every compressor gets and returns: one signature for all methods."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from leanserve.profiles.spec import ProfileSpec


@dataclass(frozen=True)
class BuildContext:
    spec: ProfileSpec
    base_dir: Path  # the base model's HF directory
    out_dir: Path  # an empty temporary directory; the job renames it into place when build returns
    calib: str | None  # --calib: a named set or a file; compressors load what they need


class Builder(Protocol):
    def __call__(self, ctx: BuildContext) -> dict[str, Any]:
        """Write a loadable HF model directory into ctx.out_dir; return facts for the manifest."""


def load_for_build(ctx: BuildContext, default_samples: int, default_seq_len: int,
                   dtype: Any = None) -> tuple[Any, Any, Any]:
    """(model, tokenizer, calibration set) for a job, with the profile's calib_samples/calib_seq_len.
    float32 unless told otherwise: pruning statistics and training want full precision."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from leanserve.compressors.calibration import load_calibration

    params = ctx.spec.params
    tokenizer = AutoTokenizer.from_pretrained(ctx.base_dir)
    calib = load_calibration(ctx.calib, tokenizer, int(params.get("calib_samples", default_samples)),
                             int(params.get("calib_seq_len", default_seq_len)))
    model = AutoModelForCausalLM.from_pretrained(ctx.base_dir, dtype=dtype or torch.float32).eval()
    return model, tokenizer, calib


def save_dense(ctx: BuildContext, model: Any, tokenizer: Any) -> None:
    """Write a plain HF checkpoint in bf16 (the base model's dtype) with its tokenizer."""
    import torch

    model.to(torch.bfloat16).save_pretrained(ctx.out_dir)
    tokenizer.save_pretrained(ctx.out_dir)
