"""The `distilled` build: a shallower student initialised from the teacher, healed to match it.

The student drops the blocks `layer_choice` names (by default the `drop_layers` of lowest block
influence on calibration text, ShortGPT) and keeps the rest with the teacher's weights; the shared
healing loop then trains it with KL(teacher || student) on the next-token distributions over
calibration text (plus optional cross-entropy) for its step count or time budget.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from leanserve.compressors.base import BuildContext, load_for_build, save_dense
from leanserve.compressors.block_influence import block_influences, lowest_influence
from leanserve.compressors.healing import distill_loss, heal_and_record
from leanserve.methods.distill import Params, kept_count, kept_layers

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


def choose_layers(teacher: nn.Module, samples: list[list[int]], params: Params) -> tuple[list[int], dict[str, Any]]:
    """(the blocks the student keeps, the manifest's record of how they were chosen)."""
    n = teacher.config.num_hidden_layers
    if params.layer_choice == "every":
        keep = kept_layers(n, params.keep_every)
        return keep, {"layer_choice": "every", "layers_dropped": [i for i in range(n) if i not in keep]}
    kept_count(n, params)  # refuses a drop that leaves no block, before the calibration pass
    influence = block_influences(teacher, samples)
    dropped = lowest_influence(influence, params.drop_layers)
    return [i for i in range(n) if i not in dropped], {
        "layer_choice": "influence", "layers_dropped": dropped, "block_influence": [round(b, 6) for b in influence]}


def build(ctx: BuildContext) -> dict[str, Any]:
    params: Params = ctx.params
    teacher, tokenizer, calib = load_for_build(ctx)
    keep, choice = choose_layers(teacher, calib.samples, params)
    student = make_student(teacher, keep)
    facts = heal_and_record(ctx, student, teacher, calib.samples, steps=params.steps, extra_fingerprint={"keep": keep})
    save_dense(ctx, student, tokenizer)
    return {"calibration": calib.describe(), "layers_kept": keep, **choice, **facts}
