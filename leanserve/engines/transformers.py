"""The transformers engine: CPU serving and the GPU fallback.

Generation runs on transformers' own continuous batching (`init_continuous_batching`), one
background thread that batches every live request per step over a paged KV cache. Sampling is ours
(`sampler.py`) so each request keeps its own seed and raw logprobs. bitsandbytes does nf4/int8.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psutil

from leanserve.engines.base import (
    Delta,
    Engine,
    EngineConfig,
    EngineError,
    GenerationRequest,
    MemoryStats,
    TokenLogprob,
)
from leanserve.engines.grammar import compiler_for
from leanserve.engines.tokenizer import Tokenizer
from leanserve.profiles.spec import LoadSpec

log = logging.getLogger(__name__)

# Tokens the paged KV cache holds in total, across requests (blocks x block size). Fixed, because CB
# would otherwise size it from free memory, which on CPU is most of the machine.
KV_CACHE_BLOCKS = 64
KV_BLOCK_SIZE = 256
# Tokens one forward step takes (longer prompts are prefilled in chunks). CB sizes its static buffers,
# among them a [tokens, vocab] logits buffer, by this: left to itself it chose 43k tokens = 8 GB here.
MAX_BATCH_TOKENS = 1024
# Prompt positions whose logits scoring computes at once: [128, vocab] is 25 MB in float32.
SCORE_CHUNK = 128


class ScoringCancelled(Exception):
    """Raised in the scoring thread when its request was cancelled between two chunks."""


def _weight_sharing_twin(model: Any) -> Any:
    """A second module tree over the same weight tensors, for prompt scoring.

    Continuous batching switches the model to paged attention, which only works inside its own loop.
    Scoring (prompt logprobs for echo=true) needs a plain causal forward, concurrently with generation.
    A deep copy whose memo maps every parameter and buffer to itself copies the modules and the config
    (so its attention stays the standard one) but not a byte of weights. bitsandbytes' LLM.int8()
    layers move their int8 matrix from the weight into a `state` object on the first forward: run one
    forward first, and share those state objects too, or the twin would compute with empty state.
    """
    import copy

    import torch

    with torch.no_grad():
        model(input_ids=torch.tensor([[0]], device=model.device), use_cache=False)
    shared: dict[int, Any] = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    shared.update({id(m.state): m.state for m in model.modules()
                   if hasattr(m, "state") and not isinstance(m.state, torch.Tensor)})
    return copy.deepcopy(model, memo=shared)


def _reserve_kv_cache(manager: Any) -> int:
    """Build CB's paged KV cache now and write every page of it once; returns its bytes.

    CB allocates the cache with torch.empty, so the OS only backs a page once a token is written there,
    and it hands out blocks round-robin: the process's RSS then creeps up for as long as the server
    runs, each new longest request touching pages no one touched before (a soak read this as +7% RSS
    in 12 minutes). Touching it all at load makes the footprint what it will be under load, from the
    start, as vLLM's preallocated cache does, and leaves growth to mean a real leak.
    """
    manager.warmup()  # creates the batch processor and its cache in this thread; a no-op pass on CPU
    cache = manager.batch_processor.cache
    tensors = [*cache.key_cache, *cache.value_cache]
    for t in tensors:
        t.zero_()
    return sum(t.numel() * t.element_size() for t in tensors)


class TransformersEngine(Engine):
    name = "transformers"

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self._model: Any = None
        self._weight_bytes: int | None = None
        self._manager: Any = None
        self._sampler: Any = None
        self._scorer: Any = None
        self._kv_cache_bytes = 0
        self._score_lock = asyncio.Lock()
        self._score_cancel: threading.Event | None = None  # the running scoring request's cancel flag

    @classmethod
    def unsupported_reason(cls, load: LoadSpec, device: str) -> str | None:
        import importlib.util

        if load.format == "gguf":
            return "GGUF files are served by the llamacpp engine"
        if load.format == "compressed-tensors" and importlib.util.find_spec("compressed_tensors") is None:
            return "loading compressed-tensors (GPTQ/AWQ) checkpoints needs the compressed-tensors package"
        if load.runtime_quant and importlib.util.find_spec("bitsandbytes") is None:
            return f"{load.runtime_quant} needs bitsandbytes, which is not installed here"
        return None

    @classmethod
    def is_installed(cls) -> bool:
        import importlib.util

        return importlib.util.find_spec("transformers") is not None and importlib.util.find_spec("torch") is not None

    # --- loading -----------------------------------------------------------------------------------------------
    def _quantization_config(self) -> Any:
        import torch
        from transformers import BitsAndBytesConfig

        load = self.config.load
        if load.runtime_quant == "nf4":
            return BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=load.runtime_options["double_quant"],
                bnb_4bit_compute_dtype=getattr(torch, self.config.dtype),
            )
        if load.runtime_quant == "int8":
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=load.runtime_options["threshold"])
        return None

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig
        from transformers.generation.continuous_batching.cb_logits_processors import (
            ContinuousBatchingLogitsProcessorList,
        )
        from transformers.generation.logits_process import LogitsProcessorList

        from leanserve.engines.sampler import RequestSampler

        cfg = self.config
        self._tokenizer = Tokenizer.from_pretrained(cfg.model_path, cfg.trust_remote_code)
        kwargs: dict[str, Any] = {}
        quant = self._quantization_config()
        if quant is not None:  # passing None would drop a checkpoint's own (compressed-tensors) config
            kwargs["quantization_config"] = quant
        self._model = AutoModelForCausalLM.from_pretrained(
            cfg.model_path,
            dtype=getattr(torch, cfg.dtype),
            device_map=cfg.device,
            use_safetensors=True,
            trust_remote_code=cfg.trust_remote_code,
            **kwargs,
        ).eval()
        self._weight_bytes = int(self._model.get_memory_footprint())
        self._scorer = _weight_sharing_twin(self._model)
        for layer in getattr(self._scorer.get_decoder(), "layers", []):
            layer.register_forward_pre_hook(self._check_scoring_cancelled)
        # do_sample + a temperature make CB reserve a logits-processor slot; we then put our
        # per-request sampler in that slot (see sampler.py for why).
        gen_config = GenerationConfig(
            do_sample=True,
            temperature=0.5,
            max_new_tokens=16,
            eos_token_id=self._tokenizer.eos_token_id,
            pad_token_id=self._tokenizer.eos_token_id,
        )
        cb_config = ContinuousBatchingConfig(
            num_blocks=KV_CACHE_BLOCKS, block_size=KV_BLOCK_SIZE, max_batch_tokens=MAX_BATCH_TOKENS
        )
        self._manager = self._model.init_continuous_batching(
            generation_config=gen_config, continuous_batching_config=cb_config
        )
        self._sampler = RequestSampler()
        processors = ContinuousBatchingLogitsProcessorList(LogitsProcessorList([self._sampler]))
        processors.tensors_required = 1  # one int32 row per step: each request's slot id
        processors.do_processing = True
        self._manager.logit_processor = processors
        self._kv_cache_bytes = _reserve_kv_cache(self._manager)
        log.info("paged KV cache: %d blocks of %d tokens, %.0f MiB reserved", KV_CACHE_BLOCKS, KV_BLOCK_SIZE,
                 self._kv_cache_bytes / 2**20)
        self._manager.start()

    async def start(self) -> None:
        await asyncio.to_thread(self._load)

    async def shutdown(self) -> None:
        if self._manager is not None:
            await asyncio.to_thread(self._manager.stop, True)

    # --- serving -----------------------------------------------------------------------------------------------
    @property
    def max_model_len(self) -> int:
        configured = self.config.max_model_len
        native = int(getattr(self._model.config, "max_position_embeddings", 2048))
        return min(configured, native) if configured else native

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        from leanserve.engines.sampler import SLOT_KWARG

        opts = request.sampling
        constraint = compiler_for(self.tokenizer, int(self._model.config.vocab_size)).constraint(opts.structured) if opts.structured else None
        slot_id, slot = self._sampler.open(opts, request.prompt_ids, constraint)
        cb_id = f"{request.request_id}-{uuid.uuid4().hex[:8]}"
        outputs: asyncio.Queue[Any] = asyncio.Queue()
        self._manager.register_result_handler(cb_id, outputs.put_nowait)
        eos = -1 if opts.ignore_eos else self.tokenizer.eos_token_id
        added = await asyncio.to_thread(
            self._manager.add_request,
            request.prompt_ids,
            request_id=cb_id,
            max_new_tokens=opts.max_tokens,
            streaming=True,
            eos_token_id=eos,
            **{SLOT_KWARG: slot_id},
        )
        if added is None:
            self._sampler.close(slot_id)
            self._forget(cb_id)
            raise EngineError("the continuous-batching loop is not accepting requests")
        sent = 0
        finished = False
        try:
            while not finished:
                out = await outputs.get()
                if out.error:
                    raise EngineError(out.error)
                finished = out.is_finished()
                new = list(out.generated_tokens[sent:])
                reason = None
                if finished:
                    hit_eos = bool(out.generated_tokens) and out.generated_tokens[-1] == eos
                    reason = "stop" if hit_eos else "length"
                if new or reason:
                    lps = slot.logprobs[sent : sent + len(new)] if opts.logprobs is not None else None
                    sent += len(new)
                    yield Delta(token_ids=new, logprobs=lps, finish_reason=reason)
        finally:
            if not finished:
                self._manager.cancel_request(cb_id)
                self._forget(cb_id)
            self._sampler.close(slot_id)

    def _forget(self, cb_id: str) -> None:
        """Drop a cancelled request's result handler. CB removes a handler only when its request
        finishes, and a cancelled one never does: without this, every dropped client leaked a handler
        (and the asyncio queue it feeds). Outputs that arrive after the handler is gone land on CB's
        shared output queue, which nothing else reads (every request here has a handler): empty it."""
        import queue

        router = self._manager.output_router
        with router._lock:
            router.result_handlers.pop(cb_id, None)
        while True:
            try:
                router.output_queue.get_nowait()
            except queue.Empty:
                break

    def _check_scoring_cancelled(self, *_: Any) -> None:
        """A forward pre-hook on every decoder layer of the scoring twin: a cancelled request stops at
        the next layer, 1/30th of a pass for the default model, rather than after the whole pass."""
        if self._score_cancel is not None and self._score_cancel.is_set():
            raise ScoringCancelled

    def _score_sync(self, prompt_ids: list[int], top_logprobs: int, cancelled: threading.Event) -> list[TokenLogprob | None]:
        """Prompt logprobs: one forward pass through the decoder (hidden states are [tokens, hidden],
        small), then the LM head and log-softmax SCORE_CHUNK rows at a time, so at most one [chunk,
        vocab] slice exists (one [tokens, vocab] float32 log-softmax was 3.2 GB at 8k tokens). The
        decoder is not chunked over a KV cache: that ran 3x slower here. Cancellation is checked
        before every layer (the hook above) and every chunk."""
        import torch

        self._score_cancel = cancelled  # scoring is serialised by _score_lock: one event at a time
        head = self._scorer.get_output_embeddings()
        softcap = getattr(self._scorer.config, "final_logit_softcapping", None)
        from leanserve.engines.sampler import chunk_logprobs

        result: list[TokenLogprob | None] = [None]
        with torch.no_grad():
            ids = torch.tensor([prompt_ids[:-1]], device=self._model.device)  # the last token predicts nothing scored
            hidden = self._scorer.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state[0]  # [S-1, H]
            for start in range(0, hidden.shape[0], SCORE_CHUNK):
                if cancelled.is_set():
                    raise ScoringCancelled
                logits = head(hidden[start : start + SCORE_CHUNK])  # [C, V]; row i predicts token start+i+1
                if softcap:
                    logits = torch.tanh(logits / softcap) * softcap
                result += chunk_logprobs(logits, prompt_ids[start + 1 : start + 1 + SCORE_CHUNK], top_logprobs)
        return result

    async def score(self, prompt_ids: list[int], top_logprobs: int) -> list[TokenLogprob | None]:
        cancelled = threading.Event()
        await self._score_lock.acquire()
        work = asyncio.ensure_future(asyncio.to_thread(self._score_sync, prompt_ids, top_logprobs, cancelled))
        # the lock is released when the thread has really stopped, not when the caller gives up: no
        # new scoring starts beside an abandoned one, yet the caller's admission slot frees at once
        work.add_done_callback(lambda _: self._score_lock.release())
        work.add_done_callback(lambda f: f.cancelled() or f.exception())  # ScoringCancelled: expected, not logged
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            cancelled.set()  # timeout or client gone: the thread stops before its next chunk
            raise

    def memory(self) -> MemoryStats:
        from leanserve.engines.memory import gpu_memory

        return MemoryStats(psutil.Process().memory_info().rss, *gpu_memory(), weights=self._weight_bytes)
