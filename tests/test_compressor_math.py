"""The hand-written compression math, on tensors small enough to check by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from leanserve.compressors.distill import distill_loss
from leanserve.compressors.gblm_score import gblm_scores, row_prune_mask, wanda_scores
from leanserve.compressors.prune import channel_importance, kept_channels, shrink_mlp
from leanserve.methods.distill import kept_layers
from leanserve.methods.groups import group_size_for

pytestmark = pytest.mark.unit


def test_gblm_score_by_hand() -> None:
    w = torch.tensor([[1.0, -2.0], [0.5, 4.0]])
    act_sq = torch.tensor([4.0, 1.0])  # input norms 2 and 1
    grad = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    # |W| * ||X|| = [[2, 2], [1, 4]];  |W| * G = [[0, 2], [1, 0]]
    assert torch.equal(wanda_scores(w, act_sq), torch.tensor([[2.0, 2.0], [1.0, 4.0]]))
    assert torch.equal(gblm_scores(w, act_sq, grad), torch.tensor([[2.0, 4.0], [2.0, 4.0]]))


def test_gradient_term_changes_the_decision() -> None:
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    act_sq = torch.tensor([1.0, 1.0, 4.0, 4.0])
    grad = torch.tensor([[5.0, 0.0, 0.0, 0.0]])
    assert row_prune_mask(wanda_scores(w, act_sq), 0.5).tolist() == [[True, True, False, False]]
    assert row_prune_mask(gblm_scores(w, act_sq, grad), 0.5).tolist() == [[False, True, False, True]]


def test_row_mask_prunes_the_same_share_of_every_row() -> None:
    scores = torch.rand(6, 10, generator=torch.Generator().manual_seed(0))
    mask = row_prune_mask(scores, 0.3)
    assert mask.sum(1).tolist() == [3] * 6
    assert row_prune_mask(scores, 0.0).sum() == 0


def test_group_size_fits_the_model() -> None:
    assert group_size_for([4096, 11008], 128) == 128  # 7B-class
    assert group_size_for([576, 1536], 128) == 64  # SmolLM2-135M
    assert group_size_for([96], 128) == 32


def test_shrinking_an_mlp_keeps_the_kept_channels_exact() -> None:
    torch.manual_seed(0)

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate_proj, self.up_proj = nn.Linear(4, 8, bias=False), nn.Linear(4, 8, bias=False)
            self.down_proj = nn.Linear(8, 4, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))

    mlp, x = MLP(), torch.randn(3, 4)
    hidden = nn.functional.silu(mlp.gate_proj(x)) * mlp.up_proj(x)
    importance = channel_importance(hidden.abs().mean(0), mlp.down_proj.weight)
    keep = kept_channels(importance, 5)
    expected = hidden[:, keep] @ mlp.down_proj.weight[:, keep].T
    with torch.no_grad():
        shrink_mlp(mlp, keep)
        assert mlp.gate_proj.weight.shape == (5, 4) and mlp.down_proj.weight.shape == (4, 5)
        assert torch.allclose(mlp(x), expected, atol=1e-6)


def test_distillation_pieces() -> None:
    assert kept_layers(30, 2) == [*range(0, 30, 2), 29]
    assert kept_layers(5, 2) == [0, 2, 4]
    logits = torch.randn(1, 3, 7)
    assert float(distill_loss(logits, logits)) < 1e-6
    assert float(distill_loss(logits, torch.randn(1, 3, 7))) > 0
