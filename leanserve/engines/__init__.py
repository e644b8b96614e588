"""Engines behind one interface, imported only when chosen (vLLM and torch are heavy).

`choose_engine` implements `--engine auto`: of the engines that support the profile on this device (installed
here, or in vLLM's own environment), the fastest by the measured table (engines/speed.py) where it holds, else
the profile's preferred engines first, then the rest; it says why.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from leanserve.engines.base import Engine
from leanserve.engines.speed import Figure, Machine, SpeedTable
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


RELAUNCHED = "LEANSERVE_RELAUNCHED"  # set in a serve process that moved to the environment of its engine


@dataclass(frozen=True)
class EngineChoice:
    name: str
    reason: str
    python: str | None = None  # the interpreter whose environment has the engine, when it is not this one


def resolve_dtype(name: str, spec: ProfileSpec, device: str, requested: str) -> str:
    """`--dtype` as engine `name` runs it: the flag's value, or for 'auto' the engine's default."""
    return requested if requested != "auto" else engine_class(name).default_dtype(spec.load, device)


def engine_interpreters() -> dict[str, str]:
    """Engines installed in another virtual environment, by the interpreter that has them: vLLM pins versions the
    main environment cannot hold, so it lives in .venv-vllm, named by LEANSERVE_VLLM_PYTHON (`make serve` sets it).
    Empty once serve has moved to such an interpreter (RELAUNCHED is set), so it never moves twice."""
    python = os.environ.get("LEANSERVE_VLLM_PYTHON")
    if os.environ.get(RELAUNCHED) or not python or not Path(python).is_file():
        return {}
    return {} if Path(python).absolute() == Path(sys.executable).absolute() else {"vllm": python}


def choose_engine(requested: str, spec: ProfileSpec, device: str, *, dtype: str = "auto",
                  table: SpeedTable | None = None, machine: Machine | None = None,
                  elsewhere: dict[str, str] | None = None) -> EngineChoice:
    """The engine to serve `spec` on `device`; `requested` is 'auto' or an engine name.

    auto: of the engines that support the profile on this device and are installed here or in an environment
    of `elsewhere`, the fastest in the measured `table` (at the dtype each would run) when the table holds on
    `machine` and has a correct figure for the profile; otherwise the profile's preferred engines first, then
    the rest. The reason says which rule decided, with the figures."""
    if requested != "auto":
        cls = engine_class(requested)
        why_not = cls.unsupported_reason(spec.load, device)  # first: installing it would not help
        if why_not:
            raise EngineUnavailable(f"engine {requested!r} cannot serve profile {spec.name!r} on {device}: {why_not}")
        if not cls.is_installed():
            raise EngineUnavailable(f"engine {requested!r} is not installed in this environment")
        return EngineChoice(requested, "requested with --engine")
    elsewhere = elsewhere or {}
    order = [*spec.engine.prefer, *(n for n in REGISTRY if n not in spec.engine.prefer)]
    candidates: list[EngineChoice] = []  # reason filled in below
    skipped: list[str] = []
    for name in order:
        cls = engine_class(name)
        why_not = cls.unsupported_reason(spec.load, device)
        if why_not:
            skipped.append(f"{name}: {why_not}")
        elif cls.is_installed() or name in elsewhere:
            candidates.append(EngineChoice(name, "", None if cls.is_installed() else elsewhere[name]))
        else:
            skipped.append(f"{name}: not installed")
    if not candidates:
        raise EngineUnavailable(f"no engine can serve profile {spec.name!r} on {device}: {'; '.join(skipped)}")
    detail = f" (skipped {'; '.join(skipped)})" if skipped else ""
    ranked, why_unranked = _rank(candidates, spec, device, dtype, table, machine)
    if ranked:
        return dataclasses.replace(ranked[0], reason=ranked[0].reason + detail)
    first = candidates[0]
    rule = "preferred by the profile" if first.name in spec.engine.prefer else "first available"
    where = f" (in {first.python})" if first.python else ""
    return dataclasses.replace(first, reason=f"auto: {rule} that is installed{where} and supports {spec.name} on "
                                             f"{device}; {why_unranked}{detail}")


def _rank(candidates: list[EngineChoice], spec: ProfileSpec, device: str, dtype: str, table: SpeedTable | None,
          machine: Machine | None) -> tuple[list[EngineChoice], str]:
    """The candidates the table has a correct figure for, fastest first, each with its reason; or ([], why not)."""
    if table is None or machine is None:
        return [], "no measured engine table"
    mismatch = table.mismatch(machine)
    if mismatch:
        return [], f"the measured engine table does not apply ({mismatch})"
    figures = []
    for c in candidates:
        f = table.figure(c.name, spec.name, resolve_dtype(c.name, spec, device, dtype))
        if f is not None and f.correct:
            figures.append((c, f))
    if not figures:
        return [], f"no correct figure for {spec.name} in the measured engine table"
    figures.sort(key=lambda cf: -cf[1].tokens_per_s)

    def said(f: Figure) -> str:
        return f"{f.engine}{f' ({f.dtype})' if f.dtype else ''} {f.tokens_per_s:.1f}"

    best = figures[0][1]
    others = "".join(f", then {said(f)}" for _, f in figures[1:])
    unmeasured = [c.name for c in candidates if c.name not in {f.engine for _, f in figures}]
    also = f"; not measured: {', '.join(unmeasured)}" if unmeasured else ""
    reason = (f"auto: fastest measured for {spec.name} here: {said(best)} tok/s at 1 stream{others}{also} "
              f"({table.describe(machine)})")
    return [dataclasses.replace(c, reason=reason) for c, _ in figures], ""
