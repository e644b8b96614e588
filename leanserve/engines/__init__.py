"""Engines behind one interface, imported only when chosen (vLLM and torch are heavy).

`choose_engine` implements `--engine auto`: the profile's preferred engines first, then the rest,
taking the first that is installed and supports the profile on this device; it says why.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from leanserve.engines.base import Engine
from leanserve.errors import EngineUnavailable
from leanserve.profiles.spec import ProfileSpec

REGISTRY: dict[str, str] = {
    "vllm": "leanserve.engines.vllm:VllmEngine",
    "transformers": "leanserve.engines.transformers:TransformersEngine",
    "llamacpp": "leanserve.engines.llamacpp:LlamaCppEngine",
}


def engine_class(name: str) -> type[Engine]:
    if name not in REGISTRY:
        raise EngineUnavailable(f"unknown engine {name!r}; choose from {', '.join(['auto', *REGISTRY])}")
    module, _, attr = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class EngineChoice:
    name: str
    reason: str


def choose_engine(requested: str, spec: ProfileSpec, device: str) -> EngineChoice:
    """The engine to serve `spec` on `device`; `requested` is 'auto' or an engine name."""
    if requested != "auto":
        cls = engine_class(requested)
        if not cls.is_installed():
            raise EngineUnavailable(f"engine {requested!r} is not installed in this environment")
        why_not = cls.unsupported_reason(spec.load, device)
        if why_not:
            raise EngineUnavailable(f"engine {requested!r} cannot serve profile {spec.name!r} on {device}: {why_not}")
        return EngineChoice(requested, "requested with --engine")
    order = [*spec.engine.prefer, *(n for n in REGISTRY if n not in spec.engine.prefer)]
    skipped: list[str] = []
    for name in order:
        cls = engine_class(name)
        if not cls.is_installed():
            skipped.append(f"{name}: not installed")
            continue
        why_not = cls.unsupported_reason(spec.load, device)
        if why_not:
            skipped.append(f"{name}: {why_not}")
            continue
        first = "preferred by the profile" if name in spec.engine.prefer else "first available"
        detail = f" (skipped {'; '.join(skipped)})" if skipped else ""
        return EngineChoice(name, f"auto: {first} that is installed and supports {spec.name} on {device}{detail}")
    raise EngineUnavailable(f"no engine can serve profile {spec.name!r} on {device}: {'; '.join(skipped)}")
