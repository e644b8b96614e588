"""GBLM-Pruner's importance metric (Das et al., "Beyond Size: How Gradients Shape Pruning Decisions
in Large Language Models"), as pure functions on tensors.

For a linear layer with weight W [out, in]:
    score_ij = |W_ij| * ||X_j||  +  |W_ij| * G_ij
where ||X_j|| is the l2 norm of input feature j over the calibration tokens (Wanda's term) and G_ij is
the l2 norm over calibration samples of the (scaled) gradient of the loss w.r.t. W_ij. Weights are
compared within each output row; the lowest `sparsity` fraction of every row is set to zero.
"""

from __future__ import annotations

import torch


def wanda_scores(weight: torch.Tensor, act_sq: torch.Tensor) -> torch.Tensor:
    """|W| * sqrt(mean squared input per feature); weight [out, in], act_sq [in]."""
    return weight.abs() * act_sq.sqrt().unsqueeze(0)


def gblm_scores(weight: torch.Tensor, act_sq: torch.Tensor, grad_l2: torch.Tensor) -> torch.Tensor:
    """Wanda's score plus |W| times the gradient's l2 norm over samples; grad_l2 [out, in]."""
    return wanda_scores(weight, act_sq) + weight.abs() * grad_l2


def row_prune_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """True where a weight is pruned: the int(sparsity * in) lowest scores of each row."""
    k = int(scores.shape[1] * sparsity)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k:
        lowest = torch.topk(scores, k, dim=1, largest=False).indices  # [out, k]
        mask.scatter_(1, lowest, True)
    return mask
