"""What this machine can run: the device, and whether the CPU has bf16 instructions."""

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


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: what vLLM-CPU's bf16 and 4-bit (WNA16) kernels need to compute correctly."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
