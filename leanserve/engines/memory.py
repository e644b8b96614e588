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


def gpu_total_bytes() -> int | None:
    """Total memory of the first visible GPU, read through NVML so that CUDA is not initialized in this
    process (vLLM forks its engine core and must be the first to touch CUDA); torch as the fallback."""
    import os

    first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    try:
        import pynvml

        pynvml.nvmlInit()
        index = int(first) if first.isdigit() else 0
        return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).total)
    except Exception:  # NVML is optional: no driver library, a UUID in CUDA_VISIBLE_DEVICES, or a container without it
        pass
    try:
        import torch
    except ImportError:
        return None
    return int(torch.cuda.get_device_properties(0).total_memory) if torch.cuda.is_available() else None
