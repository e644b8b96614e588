"""What every compressor gets and returns: one signature for all methods."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from leanserve.methods import MethodParams
from leanserve.profiles.spec import ProfileSpec


@dataclass(frozen=True)
class BuildContext:
    spec: ProfileSpec
    base_dir: Path  # the base model's HF directory
    out_dir: Path  # an empty temporary directory; the job renames it into place when build returns
    calib: str | None  # --calib: a named set or a file; compressors load what they need
    params: MethodParams  # the method's validated Params (leanserve/methods/<method>.py), defaults filled in


class Builder(Protocol):
    def __call__(self, ctx: BuildContext) -> dict[str, Any]:
        """Write a loadable HF model directory into ctx.out_dir; return facts for the manifest."""


def load_for_build(ctx: BuildContext, dtype: Any = None) -> tuple[Any, Any, Any]:
    """(model, tokenizer, calibration set) for a job, with its Params' calib_samples/calib_seq_len.
    float32 unless told otherwise: pruning statistics and training want full precision."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from leanserve.compressors.calibration import load_calibration

    tokenizer = AutoTokenizer.from_pretrained(ctx.base_dir)
    calib = load_calibration(ctx.calib, tokenizer, ctx.params.calib_samples, ctx.params.calib_seq_len)
    model = AutoModelForCausalLM.from_pretrained(ctx.base_dir, dtype=dtype or torch.float32).eval()
    return model, tokenizer, calib


def save_dense(ctx: BuildContext, model: Any, tokenizer: Any) -> None:
    """Write a plain HF checkpoint in bf16 (the base model's dtype) with its tokenizer."""
    import torch

    model.to(torch.bfloat16).save_pretrained(ctx.out_dir)
    tokenizer.save_pretrained(ctx.out_dir)
