"""The `distilled` build: a shallower student initialised from the teacher, trained to match it.

The student keeps every `keep_every`-th decoder block (and the last), with the teacher's weights, and
is trained with KL(teacher || student) on the next-token distributions over calibration text (plus
optional cross-entropy). CPU default: a few steps, enough to show the loss falls; a real run is a
GPU job with more steps (docs/profiles.md gives the setting).
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from leanserve.compressors.base import BuildContext, load_for_build, save_dense
from leanserve.compressors.healing import HealRun, checkpoint_dir, distill_loss, fingerprint, heal
from leanserve.methods.distill import Params, kept_layers

__all__ = ["Params", "build", "distill_loss"]


def make_student(teacher: nn.Module, keep: list[int]) -> nn.Module:
    student = copy.deepcopy(teacher)
    decoder = student.get_decoder()
    decoder.layers = nn.ModuleList([decoder.layers[i] for i in keep])
    for new_idx, layer in enumerate(decoder.layers):
        if hasattr(layer.self_attn, "layer_idx"):
            layer.self_attn.layer_idx = new_idx  # KV-cache slot
    student.config.num_hidden_layers = len(keep)
    if getattr(student.config, "layer_types", None):
        student.config.layer_types = [student.config.layer_types[i] for i in keep]
    return student


def build(ctx: BuildContext) -> dict[str, Any]:
    params: Params = ctx.params
    teacher, tokenizer, calib = load_for_build(ctx)
    keep = kept_layers(teacher.config.num_hidden_layers, params.keep_every)
    student = make_student(teacher, keep)
    run = HealRun(steps=params.steps, lr=params.lr, ce_weight=params.ce_weight,
                  checkpoint_dir=checkpoint_dir(ctx.out_dir, ctx.spec.name), checkpoint_every=params.checkpoint_every,
                  fingerprint=fingerprint({"params": params.model_dump(), "base": str(ctx.base_dir), "keep": keep}))
    losses = heal(student, teacher, calib.samples, run)
    save_dense(ctx, student, tokenizer)
    head = losses[: max(1, len(losses) // 10)]
    tail = losses[-max(1, len(losses) // 10):]
    return {"calibration": calib.describe(), "layers_kept": keep,
            "loss_first": sum(head) / len(head), "loss_last": sum(tail) / len(tail), "steps": len(losses),
            "loss_curve": [round(x, 5) for x in losses]}
