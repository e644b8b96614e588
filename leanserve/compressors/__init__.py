"""Compressor jobs: one module per method, one signature (`build(ctx) -> manifest facts`).

`REGISTRY[method]` names the module; it is imported only when that method runs, so heavy libraries
(llm-compressor) load only for the jobs that need them.
"""

from __future__ import annotations

import importlib

from leanserve.compressors.base import BuildContext, Builder
from leanserve.errors import ProfileError

REGISTRY: dict[str, str] = {
    "gptq": "leanserve.compressors.llmc:build_gptq",
    "awq": "leanserve.compressors.llmc:build_awq",
    "gblm": "leanserve.compressors.gblm:build",
    "structured-prune": "leanserve.compressors.prune:build",
    "distill": "leanserve.compressors.distill:build",
    "gguf": "leanserve.compressors.gguf:build",
}


def get_builder(method: str) -> Builder:
    if method not in REGISTRY:
        raise ProfileError(f"no compressor for method {method!r}; known: {', '.join(REGISTRY)}", param="profile")
    module, _, attr = REGISTRY[method].partition(":")
    return getattr(importlib.import_module(module), attr)


__all__ = ["REGISTRY", "BuildContext", "Builder", "get_builder"]
