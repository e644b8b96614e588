"""Healing by knowledge distillation, shared by `pruned` and `distilled`: KL to the unpruned teacher's
logits on calibration text, with a progress bar, a checkpoint every N steps, and resume after a kill.

The checkpoint (student and optimizer state, step, losses, and a fingerprint of the run) is written
beside the job's temporary directory, temp file then rename, so a killed job leaves either the previous
checkpoint or the new one, never half of one. A rerun with the same fingerprint (same profile params)
continues where it stopped; a different one starts again. The checkpoint is removed once training ends.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

CHECKPOINT = "heal.pt"


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) per token, averaged; logits [B, S, V]."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                    log_target=True, reduction="none").sum(-1).mean() * t * t


@dataclass(frozen=True)
class HealRun:
    steps: int
    lr: float
    ce_weight: float = 0.0
    checkpoint_dir: Path | None = None  # None: no checkpoints
    checkpoint_every: int = 50
    fingerprint: str = ""  # what must match for a checkpoint to be resumed


def fingerprint(facts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _resume(run: HealRun, student: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, list[float]]:
    path = run.checkpoint_dir / CHECKPOINT if run.checkpoint_dir else None
    if path is None or not path.is_file():
        return 0, []
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != run.fingerprint:
        return 0, []
    student.load_state_dict(state["student"])
    opt.load_state_dict(state["optimizer"])
    return int(state["step"]), list(state["losses"])


def heal(student: nn.Module, teacher: nn.Module, samples: list[list[int]], run: HealRun,
         on_step: Callable[[int], None] | None = None) -> list[float]:
    """AdamW on the student against the teacher's logits, one calibration window a step; the loss of every
    step (resumed ones included). `on_step(step)` runs after each step's checkpoint (tests stop a run there)."""
    opt = torch.optim.AdamW(student.parameters(), lr=run.lr)
    start, losses = _resume(run, student, opt)
    student.train()
    for step in tqdm(range(start, run.steps), desc="healing", initial=start, total=run.steps):
        ids = torch.tensor([samples[step % len(samples)]])
        with torch.no_grad():
            target = teacher(input_ids=ids).logits
        out = student(input_ids=ids, labels=ids if run.ce_weight else None)
        loss = distill_loss(out.logits, target) + (run.ce_weight * out.loss if run.ce_weight else 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach().item())
        if run.checkpoint_dir and (step + 1) % run.checkpoint_every == 0 and step + 1 < run.steps:
            _save(run.checkpoint_dir / CHECKPOINT, {"fingerprint": run.fingerprint, "step": step + 1, "losses": losses,
                                                    "student": student.state_dict(), "optimizer": opt.state_dict()})
        if on_step:
            on_step(step + 1)
    student.eval()
    if run.checkpoint_dir:
        (run.checkpoint_dir / CHECKPOINT).unlink(missing_ok=True)
        if run.checkpoint_dir.is_dir() and not any(run.checkpoint_dir.iterdir()):
            run.checkpoint_dir.rmdir()
    return losses


def checkpoint_dir(out_dir: Path, profile: str) -> Path:
    """Beside the job's temporary directory, under a name that survives the job: <artifacts>/.<profile>.heal."""
    return out_dir.parent / f".{profile}.heal"
