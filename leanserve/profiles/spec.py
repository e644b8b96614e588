"""A profile: how a base model is compressed (offline, `build`) and how it is loaded (`load_quant`).

Profiles are TOML files validated here, at the edge; the rest of leanserve reads the frozen model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Offline compressor methods (each needs `leanserve compress` to build an artifact first).
BuildMethod = Literal["gptq", "awq", "gblm", "structured-prune", "distill", "gguf"]
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
    runtime_quant: LoadQuant | None = None
    runtime_options: dict[str, Any] = field(default_factory=dict)  # e.g. nf4 double_quant, int8 threshold


class EngineHints(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prefer: list[str] = Field(default_factory=list, description="engines to try first, in order")


class ProfileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str
    method: str = Field(description="what a person calls it, e.g. 'GPTQ W4A16 g128' or 'LLM.int8()'")
    bits: int = 16
    build: BuildMethod | None = None
    load_quant: LoadQuant | None = None
    format: CheckpointFormat = Field(default="safetensors", description="what the served weights are on disk")
    params: dict[str, Any] = Field(default_factory=dict)
    engine: EngineHints = Field(default_factory=EngineHints)
    source: str = Field(default="builtin", description="builtin, or the user file it came from")

    @property
    def needs_artifact(self) -> bool:
        """True when the profile serves a compressor's output rather than the base model itself."""
        return self.build is not None

    @property
    def load(self) -> LoadSpec:
        """What engines see of this profile."""
        options = dict(self.params) if self.load_quant else {}
        return LoadSpec(format=self.format, runtime_quant=self.load_quant, runtime_options=options)
