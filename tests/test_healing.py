"""The shared healing loop on a tiny Llama built from a config (no download): KL falls, a run stopped
after a checkpoint resumes to exactly the losses of an uninterrupted one, a checkpoint of other params
is not resumed, the time budget stops the loop (an injected clock that each teacher forward advances by a
minute, so no test waits) and survives a resume, and the job's loss curve lands as a PNG in its directory."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from leanserve.compressors.base import BuildContext
from leanserve.compressors.heal_plot import LOSS_CURVE_PNG, running_mean
from leanserve.compressors.healing import CHECKPOINT, HealRun, heal, heal_and_record
from leanserve.methods import prune
from leanserve.profiles.registry import get_profile

pytestmark = pytest.mark.unit


class Killed(Exception):
    pass


def _models() -> tuple[torch.nn.Module, torch.nn.Module]:
    from transformers import LlamaConfig, LlamaForCausalLM

    def llama(layers: int, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return LlamaForCausalLM(LlamaConfig(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.5))

    return llama(2, 0).eval(), llama(1, 1)  # a student one block short and initialised apart


SAMPLES = [[(7 * i + j) % 64 for j in range(16)] for i in range(4)]


def test_heal_checkpoints_and_resumes_to_the_same_losses(tmp_path: Path) -> None:
    teacher, student = _models()
    fresh = copy.deepcopy(student)
    whole = heal(copy.deepcopy(fresh), teacher, SAMPLES, HealRun(steps=6, lr=1e-2)).losses
    assert len(whole) == 6 and whole[-1] < whole[0]  # the KL to the teacher falls

    run = HealRun(steps=6, lr=1e-2, checkpoint_dir=tmp_path, checkpoint_every=2, fingerprint="a")

    def kill_at_5(step: int) -> None:
        if step == 5:
            raise Killed

    with pytest.raises(Killed):
        heal(copy.deepcopy(fresh), teacher, SAMPLES, run, on_step=kill_at_5)
    saved = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert saved["step"] == 4 and len(saved["losses"]) == 4  # the last checkpoint before the kill
    assert not list(tmp_path.glob(".*.tmp"))  # written whole, then renamed

    steps_run: list[int] = []
    resumed = heal(copy.deepcopy(fresh), teacher, SAMPLES, run, on_step=steps_run.append).losses
    assert steps_run == [5, 6]  # only the steps after the checkpoint ran
    assert resumed == pytest.approx(whole, rel=1e-5)
    assert not tmp_path.exists()  # the checkpoint and its folder removed once training ended


def test_a_checkpoint_of_other_params_is_not_resumed(tmp_path: Path) -> None:
    teacher, student = _models()
    with pytest.raises(Killed):
        heal(copy.deepcopy(student), teacher, SAMPLES,
             HealRun(steps=4, lr=1e-2, checkpoint_dir=tmp_path, checkpoint_every=1, fingerprint="old"),
             on_step=lambda s: (_ for _ in ()).throw(Killed) if s == 2 else None)
    steps_run: list[int] = []
    heal(copy.deepcopy(student), teacher, SAMPLES,
         HealRun(steps=3, lr=1e-2, checkpoint_dir=tmp_path, checkpoint_every=1, fingerprint="new"),
         on_step=steps_run.append)
    assert steps_run == [1, 2, 3]


class Clock:
    """A fake monotonic clock; `Ticking` moves it on, so time passes inside a step as it really does."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class Ticking(torch.nn.Module):
    """The teacher, with every forward taking a minute of `clock`."""

    def __init__(self, teacher: torch.nn.Module, clock: Clock) -> None:
        super().__init__()
        self.teacher, self.clock = teacher, clock

    def forward(self, **kwargs: object) -> object:
        self.clock.now += 60.0
        return self.teacher(**kwargs)


def test_the_time_budget_stops_the_loop_before_its_steps() -> None:
    teacher, student = _models()
    clock = Clock(0.0)
    healed = heal(student, Ticking(teacher, clock), SAMPLES, HealRun(steps=100, lr=1e-2, minutes=2.5, clock=clock))
    # steps start at 0, 1 and 2 minutes; at 3 minutes the 2.5-minute budget is spent
    assert (len(healed.losses), healed.stopped, healed.seconds) == (3, "time budget", 180.0)
    unbounded = heal(copy.deepcopy(student), teacher, SAMPLES, HealRun(steps=4, lr=1e-2, minutes=2.5))
    assert (len(unbounded.losses), unbounded.stopped) == (4, "steps")  # the real clock: the steps end it first


def test_a_resumed_run_keeps_the_time_already_spent(tmp_path: Path) -> None:
    teacher, student = _models()
    clock = Clock(0.0)
    whole = heal(copy.deepcopy(student), Ticking(teacher, clock), SAMPLES, HealRun(steps=100, lr=1e-2, minutes=2.5, clock=clock))
    assert len(whole.losses) == 3
    clock.now = 0.0
    run = HealRun(steps=100, lr=1e-2, minutes=2.5, clock=clock, checkpoint_dir=tmp_path, checkpoint_every=1,
                  fingerprint="a")

    def kill_at_2(step: int) -> None:
        if step == 2:
            raise Killed

    with pytest.raises(Killed):
        heal(copy.deepcopy(student), Ticking(teacher, clock), SAMPLES, run, on_step=kill_at_2)
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["elapsed_s"] == 120.0
    clock.now = 5000.0  # a new process: its monotonic clock means nothing to the old one
    steps_run: list[int] = []
    resumed = heal(copy.deepcopy(student), Ticking(teacher, clock), SAMPLES, run, on_step=steps_run.append)
    assert steps_run == [3]  # 2 minutes were spent before the kill: one more step fits the 2.5
    assert (resumed.stopped, resumed.seconds) == ("time budget", 180.0)
    assert resumed.losses == pytest.approx(whole.losses, rel=1e-5)


def test_the_job_draws_its_loss_curve_into_its_directory(tmp_path: Path) -> None:
    teacher, student = _models()
    spec = get_profile("pruned", Path("/nonexistent"))
    params = prune.Params(heal_steps=5, heal_minutes=10, lr=1e-2, checkpoint_every=2)
    out = tmp_path / ".pruned.tmp-x"
    out.mkdir()
    ctx = BuildContext(spec=spec, base_dir=tmp_path / "base", out_dir=out, calib=None, params=params)
    facts = heal_and_record(ctx, student, teacher, SAMPLES, steps=params.heal_steps)
    assert facts["loss_curve_png"] == LOSS_CURVE_PNG
    assert (out / LOSS_CURVE_PNG).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert facts["healing"] == {"steps_run": 5, "steps_max": 5, "minutes": facts["healing"]["minutes"],
                                "minutes_max": 10, "stopped": "steps"}
    assert len(facts["loss_curve"]) == 5 and facts["loss_last"] < facts["loss_first"]
    assert list(tmp_path.iterdir()) == [out]  # the checkpoint folder beside the job is gone


def test_running_mean() -> None:
    assert running_mean([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
