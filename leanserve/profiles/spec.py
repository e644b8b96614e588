"""A profile: how a base model is compressed (offline, `build`) and how it is loaded (`load_quant`).

Profiles are TOML files validated here, at the edge; the rest of leanserve reads the frozen model.
`params` are checked against the methods' own `Params` models (leanserve/methods/), so a typo in a
TOML or in `compress --param` is refused with the key and the allowed ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from leanserve import methods
from leanserve.methods import MethodParams

# Quantization applied while loading (bitsandbytes): no artifact needed beyond the base model.
LoadQuant = Literal["nf4", "int8"]
# What the weights a profile serves are on disk. Engines decide from this, never from the method's name.
CheckpointFormat = Literal["safetensors", "compressed-tensors", "gguf"]


@dataclass(frozen=True)
class LoadSpec:
    """All an engine is told about how to load a profile: the checkpoint's format and any quantization
    applied while loading (with its options). A new method that writes one of these formats needs no
    engine change."""

    format: CheckpointFormat = "safetensors"
    weight_bits: int = 16  # bits per stored weight: which quantized kernels an engine has for it
    runtime_quant: LoadQuant | None = None
    # the load-time method's validated Params, every default filled in (nf4 double_quant, int8 threshold)
    runtime_options: dict[str, Any] = field(default_factory=dict)


def _problem(error: Any) -> str:
    """One pydantic error as 'key: message (got value)'; a check across keys (no loc) as its message alone."""
    if not error["loc"]:
        return error["msg"].removeprefix("Value error, ")
    return f"{'.'.join(map(str, error['loc']))}: {error['msg']} (got {error['input']!r})"


class EngineHints(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prefer: list[str] = Field(default_factory=list, description="engines to try first, in order")


class ProfileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str
    method: str = Field(description="what a person calls it, e.g. 'GPTQ W4A16 g128' or 'LLM.int8()'")
    bits: int = 16
    build: str | None = Field(default=None, description="compressor method (leanserve.methods.BUILD)")
    load_quant: LoadQuant | None = None
    format: CheckpointFormat = Field(default="safetensors", description="what the served weights are on disk")
    params: dict[str, Any] = Field(default_factory=dict)
    engine: EngineHints = Field(default_factory=EngineHints)
    source: str = Field(default="builtin", description="builtin, or the user file it came from")

    @field_validator("build")
    @classmethod
    def _known_build(cls, build: str | None) -> str | None:
        if build is not None and build not in methods.BUILD:
            raise ValueError(f"unknown build method {build!r}; known: {', '.join(methods.BUILD)}")
        return build

    @model_validator(mode="after")
    def _check_params(self) -> ProfileSpec:
        """Every key belongs to the build method's or the load-time method's Params, and each value fits."""
        parts = self._param_models()
        allowed = sorted({key for model in parts for key in model.model_fields})
        unknown = sorted(set(self.params) - set(allowed))
        if unknown:
            raise ValueError(f"profile {self.name!r}: unknown param {', '.join(map(repr, unknown))}; "
                             f"allowed: {', '.join(allowed) or 'none (this profile takes no params)'}")
        for model in parts:
            try:
                self._params_for(model)
            except ValidationError as exc:
                problems = "; ".join(_problem(e) for e in exc.errors())
                raise ValueError(f"profile {self.name!r}: bad param {problems}") from None
        return self

    def _param_models(self) -> list[type[MethodParams]]:
        names = [n for n in (self.build, self.load_quant) if n is not None]
        return [methods.method_module(n).Params for n in names]

    def _params_for(self, model: type[MethodParams]) -> MethodParams:
        return model(**{k: v for k, v in self.params.items() if k in model.model_fields})

    @property
    def build_params(self) -> MethodParams | None:
        """The compressor's validated Params (None without a build step)."""
        return self._params_for(methods.method_module(self.build).Params) if self.build else None

    @property
    def runtime_params(self) -> MethodParams | None:
        """The load-time method's validated Params (None when nothing is quantized at load)."""
        return self._params_for(methods.method_module(self.load_quant).Params) if self.load_quant else None

    def with_params(self, overrides: dict[str, Any]) -> ProfileSpec:
        """This profile with some params replaced (`compress --param`), validated like a TOML's."""
        return ProfileSpec.model_validate({**self.model_dump(), "params": {**self.params, **overrides}})

    @property
    def needs_artifact(self) -> bool:
        """True when the profile serves a compressor's output rather than the base model itself."""
        return self.build is not None

    @property
    def load(self) -> LoadSpec:
        """What engines see of this profile."""
        runtime = self.runtime_params
        options = runtime.model_dump() if runtime is not None else {}
        return LoadSpec(format=self.format, weight_bits=self.bits, runtime_quant=self.load_quant,
                        runtime_options=options)


def serves_gguf(spec: ProfileSpec, model: str | None) -> bool:
    """Whether serving `spec` for `model` means a GGUF file, which only the llamacpp engine serves: a GGUF
    profile, or a `.gguf` model given as it is."""
    return spec.load.format == "gguf" or (model or "").endswith(".gguf")
