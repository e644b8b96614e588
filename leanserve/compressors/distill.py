"""The `distilled` build: a shallower student initialised from the teacher, trained to match it.

The student keeps every `keep_every`-th decoder block (and the last), with the teacher's weights, and
is trained with KL(teacher || student) on the next-token distributions over calibration text (plus
optional cross-entropy). CPU default: a few steps, enough to show the loss falls; a real run is a
GPU job with more steps (docs/profiles.md gives the setting).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from leanserve.compressors.base import BuildContext, load_for_build, save_dense
from leanserve.methods.distill import Params, kept_layers

__all__ = ["Params", "build"]


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


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) per token, averaged; logits [B, S, V]."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                    log_target=True, reduction="none").sum(-1).mean() * t * t


def train_against_teacher(student: nn.Module, teacher: nn.Module, samples: list[list[int]], steps: int, lr: float,
                          ce_weight: float = 0.0) -> list[float]:
    """AdamW on the student; returns the loss of every step."""
    opt = torch.optim.AdamW(student.parameters(), lr=lr)
    student.train()
    losses = []
    for step in tqdm(range(steps), desc="distillation"):
        ids = torch.tensor([samples[step % len(samples)]])
        with torch.no_grad():
            target = teacher(input_ids=ids).logits
        out = student(input_ids=ids, labels=ids if ce_weight else None)
        loss = distill_loss(out.logits, target) + (ce_weight * out.loss if ce_weight else 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach().item())
    student.eval()
    return losses


def build(ctx: BuildContext) -> dict[str, Any]:
    params: Params = ctx.params
    teacher, tokenizer, calib = load_for_build(ctx)
    keep = kept_layers(teacher.config.num_hidden_layers, params.keep_every)
    student = make_student(teacher, keep)
    losses = train_against_teacher(student, teacher, calib.samples, steps=params.steps, lr=params.lr,
                                   ce_weight=params.ce_weight)
    save_dense(ctx, student, tokenizer)
    head = losses[: max(1, len(losses) // 10)]
    tail = losses[-max(1, len(losses) // 10):]
    return {"calibration": calib.describe(), "layers_kept": keep,
            "loss_first": sum(head) / len(head), "loss_last": sum(tail) / len(tail), "steps": len(losses)}
