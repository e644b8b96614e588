"""Compressor jobs: one module per build method, imported only when that job runs.

The convention every compressor module follows:

- it exposes `Params`, the method's pydantic parameter model. `Params` is defined in the method's light
  module, `leanserve/methods/<method>.py` (pydantic only), and imported here, so profiles validate
  their `params` and `fit` plans without importing a job or its libraries;
- it exposes `build(ctx: BuildContext) -> dict` (manifest facts): it writes a loadable model
  directory into `ctx.out_dir`. `ctx.params` is the profile's validated `Params` instance (defaults
  filled in), so a job never calls `params.get(key, default)`;
- it is imported only when its job runs (`compressor(method)`), so whatever it imports (torch,
  llm-compressor) never loads for `serve`, `fit` or `profiles`.

`REGISTRY[build]` names the module of a profile's `build` method; `leanserve.methods.BUILD` has the
same keys (a unit test checks both, and that each module's `Params` is the method's).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from leanserve.compressors.base import BuildContext, Builder
from leanserve.errors import ProfileError

REGISTRY: dict[str, str] = {
    "gptq": "leanserve.compressors.gptq",
    "awq": "leanserve.compressors.awq",
    "autoround": "leanserve.compressors.autoround",
    "gblm": "leanserve.compressors.gblm",
    "structured-prune": "leanserve.compressors.prune",
    "distill": "leanserve.compressors.distill",
    "gguf": "leanserve.compressors.gguf",
}


def compressor(method: str) -> ModuleType:
    """The compressor module for a build method (it has `Params` and `build`)."""
    if method not in REGISTRY:
        raise ProfileError(f"no compressor for method {method!r}; known: {', '.join(REGISTRY)}", param="profile")
    return importlib.import_module(REGISTRY[method])


def get_builder(method: str) -> Builder:
    return compressor(method).build


__all__ = ["REGISTRY", "BuildContext", "Builder", "compressor", "get_builder"]
