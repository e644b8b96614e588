"""The shared healing loop on a tiny Llama built from a config (no download): KL falls, a run stopped
after a checkpoint resumes to exactly the losses of an uninterrupted one, and a checkpoint of other params
is not resumed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from leanserve.compressors.healing import CHECKPOINT, HealRun, heal

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
    whole = heal(copy.deepcopy(fresh), teacher, SAMPLES, HealRun(steps=6, lr=1e-2))
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
    resumed = heal(copy.deepcopy(fresh), teacher, SAMPLES, run, on_step=steps_run.append)
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
