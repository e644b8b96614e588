"""GPU memory as torch and NVML see it; (None, None, None) without a GPU."""

from __future__ import annotations


def gpu_memory() -> tuple[int | None, int | None, int | None]:
    """(torch allocated, torch reserved, NVML used on device 0) in bytes."""
    try:
        import torch
    except ImportError:
        return None, None, None
    if not torch.cuda.is_available():
        return None, None, None
    allocated, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    used: int | None = None
    try:
        import pynvml

        pynvml.nvmlInit()
        used = int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).used)
    except Exception:  # NVML is optional: no driver library, or a container without it
        used = None
    return allocated, reserved, used
