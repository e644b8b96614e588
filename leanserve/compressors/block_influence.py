"""Block influence (ShortGPT, Men et al. 2024): how much a decoder block changes the hidden state.

BI_i = 1 - mean over tokens of cos(h_in, h_out) for block i's input and output hidden states. A block
whose output points where its input did (BI near 0) adds little, so the lowest are the ones to drop.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from leanserve.compressors.calibration import forward_each


def cosine_per_token(h_in: torch.Tensor, h_out: torch.Tensor) -> torch.Tensor:
    """cos(h_in, h_out) of every token; [B, S, H] -> [B * S], in float32."""
    return F.cosine_similarity(h_in.reshape(-1, h_in.shape[-1]).float(), h_out.reshape(-1, h_out.shape[-1]).float(), dim=-1)


def lowest_influence(influence: list[float], drop: int) -> list[int]:
    """The indices of the `drop` blocks of lowest influence, ascending (ties: the earlier block)."""
    order = sorted(range(len(influence)), key=lambda i: (influence[i], i))
    return sorted(order[:drop])


def _hidden(x: Any) -> torch.Tensor:
    return x[0] if isinstance(x, tuple) else x  # decoder layers return a tensor or (hidden, ...)


def block_influences(model: nn.Module, samples: list[list[int]]) -> list[float]:
    """BI of every decoder block of `model`, averaged over every token of `samples`."""
    layers = model.get_decoder().layers
    sums = [0.0] * len(layers)

    def hook(i: int):  # noqa: ANN202
        def record(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            h_in = args[0] if args else kwargs["hidden_states"]
            sums[i] += float(cosine_per_token(h_in, _hidden(output)).sum())
        return record

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    tokens = forward_each(model, samples, handles, "block influence")
    return [1.0 - s / tokens for s in sums]
