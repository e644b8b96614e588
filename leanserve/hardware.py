"""What this machine can run: the device, and whether the CPU has bf16 instructions."""

from __future__ import annotations

import os
import platform


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


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX, read from /proc/cpuinfo now (never assumed): what makes bfloat16 native on a CPU,
    and what vLLM-CPU's bf16 and 4-bit (WNA16) kernels need to compute correctly."""
    flags = _cpuinfo()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_name() -> str:
    """The CPU's model name and core count, e.g. 'AMD EPYC (2 cores)': how benchmark results name a machine."""
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")),
                 platform.processor() or "CPU")
    return f"{model} ({os.cpu_count()} cores)"
