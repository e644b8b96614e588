"""An importance matrix for llama.cpp's k-quants, computed with torch and handed over through ctypes.

The importance of input column j of a linear layer is the mean of x_j^2 over calibration tokens (what
llama.cpp's `llama-imatrix` tool collects); the quantizer then weighs each weight's rounding error by
it. llama.cpp's imatrix file loader lives in its `common` library, which llama-cpp-python does not ship,
but `llama_model_quantize_params.imatrix` takes a plain C array of {name, data, size} ending with a NULL
name: `size` must be the tensor's ne[0] (its input width).
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import torch
from torch import nn

from leanserve.compressors.calibration import forward_each


def collect(model: nn.Module, samples: list[list[int]], n_layer: int) -> dict[str, np.ndarray]:
    """{GGUF tensor name: float32 [in_features] mean squared input} for every linear in the decoder."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layer)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    handles = []

    def hook(name: str):  # noqa: ANN202
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()  # [tokens, in]
            sums[name] = sums.get(name, 0) + (x * x).sum(0)
            counts[name] = counts.get(name, 0) + x.shape[0]
        return record

    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear) and ".layers." in module_name:
            gguf_name = names.get_name(f"{module_name}.weight", try_suffixes=(".weight",))
            if gguf_name is not None:
                handles.append(module.register_forward_pre_hook(hook(gguf_name)))
    forward_each(model, samples, handles, desc="importance matrix")
    return {name: (sums[name] / counts[name]).numpy().astype(np.float32) for name in sums}


def as_c_array(llama_cpp: Any, imatrix: dict[str, np.ndarray]) -> tuple[Any, list[Any]]:
    """(the NULL-terminated llama_model_imatrix_data array, the buffers it points into). Keep the second
    alive until llama_model_quantize returns: the C side holds bare pointers into them."""
    entry = llama_cpp.llama_model_imatrix_data
    array = (entry * (len(imatrix) + 1))()
    keep: list[Any] = []
    for i, (name, values) in enumerate(sorted(imatrix.items())):
        data = np.ascontiguousarray(values, dtype=np.float32)
        encoded = name.encode()
        keep += [data, encoded]
        array[i].name = encoded
        array[i].data = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        array[i].size = data.size
    array[len(imatrix)].name = None  # the terminator
    return array, keep
