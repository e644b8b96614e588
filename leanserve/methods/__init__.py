"""What each method is, without running it: its typed parameters and the facts other layers need.

One light module per method (pydantic only: no torch, no llm-compressor), so profiles validate their
`params` when they load, `fit` plans with the numbers the compressor uses, and engines read load-time
options, all without importing a compressor job. A method module exposes:

- `Params`: a pydantic model (`extra="forbid"`, frozen) holding the defaults and their units; a
  profile's `[params]` are validated against it, so a typo is an error naming the allowed keys;
- `served_shape(shape, params)` (optional): the model shape the method produces (fit.ModelShape);
- `block_bytes(linears, params)` (optional): bytes of one decoder block's quantizable matrices, given
  as (in_features, out_features) pairs, as an engine holds them; absent means 16-bit weights.

`BUILD[name]` is a compressor method (`build = NAME` in a profile; its job is
`leanserve.compressors.REGISTRY[NAME]`); `RUNTIME[name]` a quantization applied while loading
(`load_quant = NAME`). Adding a method = a module here, a compressor module, a line in each registry
and a TOML file; no engine or planner change.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from pydantic import BaseModel, ConfigDict, Field

BUILD: dict[str, str] = {
    "gptq": "leanserve.methods.gptq",
    "awq": "leanserve.methods.awq",
    "autoround": "leanserve.methods.autoround",
    "gblm": "leanserve.methods.gblm",
    "structured-prune": "leanserve.methods.prune",
    "distill": "leanserve.methods.distill",
    "gguf": "leanserve.methods.gguf",
}
RUNTIME: dict[str, str] = {
    "nf4": "leanserve.methods.nf4",
    "int8": "leanserve.methods.int8",
}


class MethodParams(BaseModel):
    """Base of every method's Params: unknown keys are refused, values are read-only."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def calibrated(samples: int, seq_len: int) -> type[MethodParams]:
    """A Params base with the calibration size every calibrated method takes (defaults differ per method)."""

    class Calibrated(MethodParams):
        calib_samples: int = Field(samples, ge=1, description="calibration windows (count)")
        calib_seq_len: int = Field(seq_len, ge=16, description="tokens per calibration window")

    return Calibrated


def healed(samples: int, seq_len: int) -> type[MethodParams]:
    """A calibrated Params base for methods healed by the shared distillation loop (compressors/healing.py).

    `heal_minutes` is wall clock of the loop alone, counted across resumes: 30 is about what this CPU
    affords a default build; the method's step count caps it too, so a faster machine stops on steps."""

    class Healed(calibrated(samples, seq_len)):  # type: ignore[misc]
        heal_minutes: float = Field(30.0, gt=0, description="healing time budget (minutes, across resumes); "
                                                            "the loop stops at this or at its step count")
        lr: float = Field(1e-4, gt=0, description="AdamW learning rate of the healing steps")
        checkpoint_every: int = Field(50, ge=1, description="steps between healing checkpoints (a killed job resumes there)")

    return Healed


def method_module(name: str) -> ModuleType:
    """The method module for a build or load-time method name (KeyError when there is none)."""
    return importlib.import_module({**BUILD, **RUNTIME}[name])
