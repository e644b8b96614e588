"""Healing by knowledge distillation, shared by `pruned` and `distilled`: KL to the unpruned teacher's
logits on calibration text, with a progress bar, a checkpoint every N steps, and resume after a kill.

The loop stops at its step count or its time budget, whichever comes first; the time is the loop's own
wall clock, summed across resumes, so a job killed twice still heals for the budget and no longer.

The checkpoint (student and optimizer state, step, losses, elapsed seconds, and a fingerprint of the run)
is written beside the job's temporary directory, temp file then rename, so a killed job leaves either the
previous checkpoint or the new one, never half of one. A rerun with the same fingerprint (same profile
params) continues where it stopped; a different one starts again. The checkpoint is removed once training
ends.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from leanserve.compressors.base import BuildContext
from leanserve.compressors.heal_plot import LOSS_CURVE_PNG, plot_loss_curve

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
    minutes: float | None = None  # time budget of the loop across resumes; None: the steps alone
    ce_weight: float = 0.0
    checkpoint_dir: Path | None = None  # None: no checkpoints
    checkpoint_every: int = 50
    fingerprint: str = ""  # what must match for a checkpoint to be resumed
    clock: Callable[[], float] = time.monotonic  # seconds; tests pass a fake one


@dataclass(frozen=True)
class Healed:
    """What a healing run did: the loss of every step (resumed ones included) and why it stopped."""

    losses: list[float]
    seconds: float  # the loop's wall clock, across resumes
    stopped: Literal["steps", "time budget"]

    def facts(self, run: HealRun) -> dict[str, Any]:
        """The manifest's record of the run (loss_first/loss_last: means of the first and last tenth)."""
        tenth = max(1, len(self.losses) // 10)
        head, tail = self.losses[:tenth], self.losses[-tenth:]
        return {"healing": {"steps_run": len(self.losses), "steps_max": run.steps, "minutes": round(self.seconds / 60, 2),
                            "minutes_max": run.minutes, "stopped": self.stopped},
                "loss_first": sum(head) / len(head) if head else None,
                "loss_last": sum(tail) / len(tail) if tail else None,
                "loss_curve": [round(x, 5) for x in self.losses]}


def fingerprint(facts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _resume(run: HealRun, student: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, list[float], float]:
    """(step, losses, elapsed seconds) of a matching checkpoint, after loading its states; else a fresh start."""
    path = run.checkpoint_dir / CHECKPOINT if run.checkpoint_dir else None
    if path is None or not path.is_file():
        return 0, [], 0.0
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != run.fingerprint:
        return 0, [], 0.0
    student.load_state_dict(state["student"])
    opt.load_state_dict(state["optimizer"])
    return int(state["step"]), list(state["losses"]), float(state.get("elapsed_s", 0.0))


def heal(student: nn.Module, teacher: nn.Module, samples: list[list[int]], run: HealRun,
         on_step: Callable[[int], None] | None = None) -> Healed:
    """AdamW on the student against the teacher's logits, one calibration window a step, until the step
    count or the time budget runs out. `on_step(step)` runs after each step's checkpoint (tests stop a run
    there)."""
    opt = torch.optim.AdamW(student.parameters(), lr=run.lr)
    start, losses, before = _resume(run, student, opt)
    began = run.clock()
    budget = run.minutes * 60 if run.minutes is not None else float("inf")

    def elapsed() -> float:
        return before + run.clock() - began

    stopped: Literal["steps", "time budget"] = "steps"
    student.train()
    for step in tqdm(range(start, run.steps), desc="healing", initial=start, total=run.steps):
        if elapsed() >= budget:
            stopped = "time budget"
            break
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
                                                    "elapsed_s": elapsed(), "student": student.state_dict(),
                                                    "optimizer": opt.state_dict()})
        if on_step:
            on_step(step + 1)
    student.eval()
    if run.checkpoint_dir:
        (run.checkpoint_dir / CHECKPOINT).unlink(missing_ok=True)
        if run.checkpoint_dir.is_dir() and not any(run.checkpoint_dir.iterdir()):
            run.checkpoint_dir.rmdir()
    return Healed(losses=losses, seconds=elapsed(), stopped=stopped)


def checkpoint_dir(out_dir: Path, profile: str) -> Path:
    """Beside the job's temporary directory, under a name that survives the job: <artifacts>/.<profile>.heal."""
    return out_dir.parent / f".{profile}.heal"


def heal_and_record(ctx: BuildContext, student: nn.Module, teacher: nn.Module, samples: list[list[int]], steps: int,
                    extra_fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Heal `student` with the job's Params (lr, heal_minutes, checkpoint_every, ce_weight if it has one),
    checkpointing beside the job, and draw the loss curve into the job's directory (it lands with the
    artifact); the manifest facts of the run."""
    params = ctx.params
    run = HealRun(steps=steps, lr=params.lr, minutes=params.heal_minutes, ce_weight=getattr(params, "ce_weight", 0.0),
                  checkpoint_dir=checkpoint_dir(ctx.out_dir, ctx.spec.name), checkpoint_every=params.checkpoint_every,
                  fingerprint=fingerprint({"params": params.model_dump(), "base": str(ctx.base_dir),
                                           **(extra_fingerprint or {})}))
    healed = heal(student, teacher, samples, run)
    facts = healed.facts(run)
    if healed.losses:
        title = (f"{ctx.spec.name}: {len(healed.losses)} healing steps in {healed.seconds / 60:.1f} min "
                 f"(stopped by the {'step count' if healed.stopped == 'steps' else 'time budget'})")
        plot_loss_curve(healed.losses, ctx.out_dir / LOSS_CURVE_PNG, title, ce_weight=run.ce_weight)
    return {**facts, "loss_curve_png": LOSS_CURVE_PNG if healed.losses else None}
