"""The `pruned` build: structured pruning that really shrinks the matrices.

Every MLP keeps the same number of intermediate channels (so the result is a standard config with a
smaller `intermediate_size`, which every engine serves unchanged). A channel's importance is how much
it contributes to the MLP's output on calibration text: mean |act(gate(x)) * up(x)| over tokens times
the norm of its column in down_proj (Minitron's activation-based importance). The pruned model is then
healed against the unpruned one by the shared distillation loop (compressors/healing.py), for its step
count or its time budget, whichever ends first.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from leanserve.compressors.base import BuildContext, load_for_build, save_dense
from leanserve.compressors.calibration import forward_each
from leanserve.methods.prune import Params, kept_width

__all__ = ["Params", "build"]


def channel_importance(mean_abs_hidden: torch.Tensor, down_weight: torch.Tensor) -> torch.Tensor:
    """[intermediate] importance: mean |hidden activation| x l2 norm of the down_proj column."""
    return mean_abs_hidden * down_weight.float().norm(dim=0)


def kept_channels(importance: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the `keep` most important channels, in their original order."""
    return torch.topk(importance, keep).indices.sort().values


@torch.no_grad()
def shrink_mlp(mlp: nn.Module, keep_idx: torch.Tensor) -> None:
    """Slice gate/up rows and down columns in place to the kept channels."""
    for proj in (mlp.gate_proj, mlp.up_proj):
        proj.weight = nn.Parameter(proj.weight.data[keep_idx].clone())
        proj.out_features = len(keep_idx)
    mlp.down_proj.weight = nn.Parameter(mlp.down_proj.weight.data[:, keep_idx].clone())
    mlp.down_proj.in_features = len(keep_idx)


@torch.no_grad()
def mlp_hidden_means(model: nn.Module, samples: list[list[int]]) -> list[torch.Tensor]:
    """Mean |input of down_proj| per intermediate channel, for every layer."""
    layers = model.get_decoder().layers
    sums = [torch.zeros(layer.mlp.down_proj.in_features) for layer in layers]

    def hook(i: int):  # noqa: ANN202
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            sums[i] += inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).float().sum(0)
        return record

    handles = [layer.mlp.down_proj.register_forward_pre_hook(hook(i)) for i, layer in enumerate(layers)]
    tokens = forward_each(model, samples, handles, "calibration")
    return [s / tokens for s in sums]


def build(ctx: BuildContext) -> dict[str, Any]:
    params: Params = ctx.params
    model, tokenizer, calib = load_for_build(ctx)
    before = sum(p.numel() for p in model.parameters())
    old = model.config.intermediate_size
    keep = kept_width(old, params.mlp_keep)
    means = mlp_hidden_means(model, calib.samples)
    for layer, mean in tqdm(list(zip(model.get_decoder().layers, means)), desc="pruning MLP channels"):
        shrink_mlp(layer.mlp, kept_channels(channel_importance(mean, layer.mlp.down_proj.weight), keep))
    model.config.intermediate_size = keep
    healing: dict[str, Any] = {"healing": None, "loss_curve": [], "loss_curve_png": None}
    if params.heal_steps:
        from transformers import AutoModelForCausalLM

        from leanserve.compressors.healing import heal_and_record

        teacher = AutoModelForCausalLM.from_pretrained(ctx.base_dir, dtype=torch.float32).eval()
        healing = heal_and_record(ctx, model, teacher, calib.samples, steps=params.heal_steps)
    after = sum(p.numel() for p in model.parameters())
    save_dense(ctx, model, tokenizer)
    return {"calibration": calib.describe(), "intermediate_size": {"before": old, "after": keep},
            "parameters": {"before": before, "after": after}, **healing}
