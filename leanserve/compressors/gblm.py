"""The int8-gblm build: GBLM-Pruner unstructured pruning (the metric is in gblm_score.py).

One pass over the calibration samples collects, for every linear layer of the decoder blocks, the
mean squared input per feature (forward hooks) and the l2 norm over samples of the scaled gradient
(backward). Then each layer is pruned row by row. Simplification, stated: statistics come from the
dense model in that one pass; the reference code recomputes activations block by block after pruning
the blocks before.  LLM.int8() is applied when the server loads the result (profile `load_quant`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from leanserve.compressors.base import BuildContext, load_for_build, save_dense
from leanserve.compressors.gblm_score import gblm_scores, row_prune_mask, wanda_scores
from leanserve.methods.gblm import Params

__all__ = ["Params", "build"]

GRAD_SCALE = 100.0  # the reference scales gradients before squaring, to keep fp16 sums away from zero


def decoder_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear inside the decoder blocks (embeddings and lm_head are left dense)."""
    layers = model.get_decoder().layers
    return {f"layers.{i}.{name}": mod for i, layer in enumerate(layers)
            for name, mod in layer.named_modules() if isinstance(mod, nn.Linear)}


def collect_statistics(model: nn.Module, samples: list[list[int]], with_grad: bool
                       ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(mean squared input per feature, gradient l2 over samples) for every decoder linear."""
    linears = decoder_linears(model)
    act_sq = {n: torch.zeros(m.in_features) for n, m in linears.items()}
    grad_sq = {n: torch.zeros_like(m.weight, dtype=torch.float32) for n, m in linears.items()} if with_grad else {}

    def hook(name: str):  # noqa: ANN202
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()  # [tokens, in]
            act_sq[name] += (x * x).sum(0) / len(samples)
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in linears.items()]
    model.train(with_grad)  # dropout is 0 in these models; train() only enables autograd bookkeeping
    try:
        for ids in tqdm(samples, desc="calibration (activations + gradients)" if with_grad else "calibration"):
            batch = torch.tensor([ids])
            if with_grad:
                model.zero_grad(set_to_none=True)
                model(input_ids=batch, labels=batch).loss.backward()
                for n, m in linears.items():
                    grad_sq[n] += (m.weight.grad.float() * GRAD_SCALE) ** 2
            else:
                with torch.no_grad():
                    model(input_ids=batch)
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.eval()
    return act_sq, {n: g.sqrt() for n, g in grad_sq.items()}


@torch.no_grad()
def prune_model(model: nn.Module, act_sq: dict[str, torch.Tensor], grad_l2: dict[str, torch.Tensor] | None,
                sparsity: float) -> float:
    """Zero the lowest-scoring weights of every row in place; returns the sparsity reached in them."""
    zeros = total = 0
    for name, lin in tqdm(decoder_linears(model).items(), desc="pruning layers"):
        w = lin.weight.data.float()
        scores = gblm_scores(w, act_sq[name], grad_l2[name]) if grad_l2 else wanda_scores(w, act_sq[name])
        mask = row_prune_mask(scores, sparsity)
        lin.weight.data[mask] = 0
        zeros += int((lin.weight.data == 0).sum())
        total += lin.weight.numel()
    return zeros / total


def build(ctx: BuildContext) -> dict[str, Any]:
    params: Params = ctx.params
    sparsity = params.sparsity
    model, tokenizer, calib = load_for_build(ctx)
    # gradient_term = false gives Wanda (|W| x ||X|| alone), the baseline GBLM is measured against
    with_grad = params.gradient_term
    act_sq, grad_l2 = collect_statistics(model, calib.samples, with_grad=with_grad)
    reached = prune_model(model, act_sq, grad_l2 if with_grad else None, sparsity)
    save_dense(ctx, model, tokenizer)
    return {"calibration": calib.describe(), "metric": "gblm" if with_grad else "wanda", "sparsity_target": sparsity, "sparsity_reached": round(reached, 4),
            "sparsity_scope": "linear layers of the decoder blocks (embeddings, lm_head dense)"}
