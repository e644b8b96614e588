"""Loading llama-cpp-python's shared library once per process, for the llamacpp engine and the gguf job.

leanserve builds llama.cpp for runtime CPU dispatch (GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS), so that
a wheel or an image built on one machine runs on another: the CPU kernels are then separate
`libggml-cpu-<variant>.so` modules, and ggml picks the best one this CPU supports when it loads them.
ggml only looks for them next to the executable (python's bin/) and in the working directory, never
in llama_cpp/lib/ where the wheel installs them, so this module loads them from there explicitly.
A native build (CPU kernels linked in) already has its backend registered, and nothing is loaded.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

_lock = threading.Lock()
_loaded: ModuleType | None = None


def lib_dir() -> Path:
    """llama_cpp/lib/ of the installed package (the shared libraries and CPU variant modules)."""
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        raise ImportError("llama-cpp-python is not installed")
    return Path(spec.origin).parent / "lib"


def cpu_variant() -> str:
    """The CPU kernel module this process loaded ("native" for a build with the kernels linked in)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    for line in maps.splitlines():
        name = line.rsplit("/", 1)[-1]
        if name.startswith("libggml-cpu-") and ".so" in name:
            return name.removeprefix("libggml-cpu-").split(".so")[0]
    return "native"


def load() -> ModuleType:
    """`llama_cpp` (the low-level bindings) with a CPU backend registered and the backend initialised."""
    global _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        import llama_cpp

        # llama-cpp-python prints every llama.cpp log line to stderr unless its logger says otherwise:
        # keep warnings and errors (a file that does not load says why there), drop the load chatter.
        logging.getLogger("llama-cpp-python").setLevel(logging.WARNING)
        # The copy libllama is linked against (its NEEDED soname). A wheel cannot hold symlinks, so
        # libggml.so and libggml.so.0 are two files there, and each loaded copy has its own registry.
        soname = lib_dir() / "libggml.so.0"
        ggml = ctypes.CDLL(str(soname if soname.is_file() else lib_dir() / "libggml.so"))
        ggml.ggml_backend_reg_count.restype = ctypes.c_size_t
        if ggml.ggml_backend_reg_count() == 0:
            ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
            ggml.ggml_backend_load_all_from_path(str(lib_dir()).encode())
        if ggml.ggml_backend_reg_count() == 0:
            raise ImportError(f"llama.cpp found no CPU backend in {lib_dir()} (no libggml-cpu-*.so this CPU can run)")
        llama_cpp.llama_backend_init()
        log.info("llama.cpp %s, CPU kernels: %s", getattr(llama_cpp, "__version__", "?"), cpu_variant())
        _loaded = llama_cpp
        return llama_cpp


def supports_gpu_offload() -> bool:
    """Whether the installed llama.cpp was built with a GPU backend (llama_supports_gpu_offload() in
    llama.h): a CPU build, as pip compiles it without CMAKE_ARGS, says no; so does a missing library."""
    try:
        return bool(load().llama_supports_gpu_offload())
    except (ImportError, OSError, AttributeError):
        return False
