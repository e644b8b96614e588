"""The llamacpp engine: GGUF files on llama.cpp (llama-cpp-python's low-level API), batched by us.

One decode thread owns the llama.cpp context. Each step it puts every live request into one
`llama_batch` (one sequence id per request): one token for each request that is generating, then
prompt chunks for those still prefilling, never more than n_batch tokens in all (above it llama.cpp
aborts the process instead of returning an error). Each sequence has its own KV region
(kv_unified off: n_ctx = SEQUENCES x context), released the moment its request finishes, is cancelled
or its client goes away. A released sequence keeps its KV: the next request whose prompt starts the same
way (the same system prompt, the next turn of a chat) is given that sequence and decodes only the rest,
as llama-server's prompt cache does; usage reports those tokens as cached_tokens. Sampling and logprobs
are computed here from the raw logits with sampler.pick_token, as the transformers engine does, with a
generator per seeded request.

The tokenizer is the HF one the gguf job saves beside the file, so token ids match the other engines
exactly (tests check llama.cpp's own tokenizer agrees); a bare .gguf gets the tokenizer transformers
builds from the file's metadata.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from leanserve.engines.base import (
    Delta,
    Engine,
    EngineConfig,
    EngineError,
    GenerationRequest,
    MemoryStats,
    SamplingOptions,
    TokenLogprob,
)
from leanserve.engines.grammar import compiler_for
from leanserve.engines.tokenizer import Tokenizer
from leanserve.fit import LayerSplit, render_split
from leanserve.profiles.spec import LoadSpec

log = logging.getLogger(__name__)

SEQUENCES = 8  # requests decoded together; more wait in line (each has a KV region of the whole context)
N_BATCH = 512  # tokens in one llama_decode (logical and physical batch)
SCORE_CHUNK = 128  # prompt positions scored per step: bounds the logits copied out at once ([chunk, vocab])
DEFAULT_CONTEXT = 2048  # per sequence, when --max-model-len is not given (KV bytes grow with SEQUENCES x this)
# What one more run of live sequence ids is worth, in kept prompt tokens: a pass per step costs about 3.7 ms
# here, prefilling a token about 1.5 ms (benchmarks/llamacpp_batching.py), so 64 tokens are some 26 steps
# of the extra pass. A kept chat history wins; the chat template's few shared tokens do not.
RUN_COST = 64


def n_gpu_layers(device: str, offload_supported: bool, split: Callable[[], LayerSplit]) -> int:
    """Blocks to offload: 0 on a CPU or with a llama.cpp built without GPU offload (the split is then not
    even computed); on a GPU, what the split planned (leanserve.fit.split_layers), refused when no layer fits."""
    if device == "cpu" or not offload_supported:
        return 0
    plan = split()
    log.info("llamacpp GPU split:\n%s", render_split(plan))
    if not plan.fits:
        raise EngineError(f"the llamacpp engine cannot offload anything to the GPU: {plan.reason()}")
    return plan.n_gpu_layers


def gguf_file(path: Path) -> Path:
    """The .gguf to load: `path` itself, or the one .gguf in an artifact directory."""
    if path.is_file():
        return path
    files = sorted(path.glob("*.gguf"))
    if len(files) != 1:
        raise EngineError(f"{path} should hold exactly one .gguf file, found {len(files)}")
    return files[0]


@dataclass
class _Job:
    """One sequence in the decode loop: a generation, or a prompt to score (all positions' logits)."""

    prompt: list[int]
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[Any]
    opts: SamplingOptions | None = None  # None: a scoring job
    top_logprobs: int = 0
    request_id: str = "score"
    slot: Any = None  # sampler.Slot: the request's sampling state (seed, penalties, grammar)
    seq_id: int = -1
    n_past: int = 0  # positions already in this sequence's KV
    reused: int = 0  # of them, kept from the request that used the sequence before (prefix cache)
    next_token: int | None = None  # sampled, not yet decoded
    generated: int = 0
    scored: list[TokenLogprob | None] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def send(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:  # the event loop is closed (server shut down): nobody is waiting any more
            pass

    @property
    def prefilling(self) -> bool:
        return self.n_past < len(self.prompt)


def pick_sequence(free: list[int], live: set[int], shared: dict[int, int], released: list[int]) -> int:
    """The free sequence a new request gets. Two things are worth having: KV already kept for the start of
    its prompt (`shared` tokens it need not decode), and live sequence ids that stay consecutive, since
    llama.cpp decodes each run of consecutive ids in a pass of its own, every step (live 0, 2, 4, 6 took
    1.8x the time of 0-3 a step here). Each run costs RUN_COST tokens of kept prefix; among equals, the
    sequence released longest ago, so that the latest requests' KV is overwritten last."""

    def runs(ids: set[int]) -> int:
        return sum(1 for i in ids if i - 1 not in ids)

    return max(free, key=lambda i: (shared[i] - RUN_COST * runs(live | {i}), -released[i]))


def _deliver(items: list[tuple[_Job, Any]]) -> None:
    """On the event loop: hand each job its item (one wake-up of the loop for a whole decode step)."""
    for job, item in items:
        job.out.put_nowait(item)


class LlamaCppEngine(Engine):
    name = "llamacpp"

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self._ll: Any = None
        self._slot: Any = None
        self._model: Any = None
        self._ctx: Any = None
        self._batch: Any = None
        self._n_vocab = 0
        self._context = 0
        self._kv_bytes = 0
        self._inbox: queue.Queue[_Job] = queue.Queue()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._seqs: list[_Job | None] = [None] * SEQUENCES
        # what each sequence's KV holds, positions 0.. in order: kept after its request ends, for the next
        # prompt that starts the same way; and when each was last released (the oldest is overwritten first)
        self._kept: list[list[int]] = [[] for _ in range(SEQUENCES)]
        self._released: list[int] = [0] * SEQUENCES
        self._outbox: list[tuple[_Job, Any]] = []  # a step's tokens and scores, delivered together by _flush
        # batching counters, logged as each request ends (tests read them: steps < tokens means batching)
        self.decode_calls = 0
        self.sampled_tokens = 0
        self.peak_sequences = 0
        self.reused_tokens = 0

    @classmethod
    def unsupported_reason(cls, load: LoadSpec, device: str) -> str | None:
        if load.format != "gguf":
            return "the llamacpp engine serves GGUF files only"
        if device != "cpu":
            from leanserve.engines.llamacpp_lib import supports_gpu_offload

            if not supports_gpu_offload():
                return ("the llamacpp engine cannot use the GPU: this llama.cpp build has no GPU offload "
                        "(llama_supports_gpu_offload() is false; a CUDA build of llama-cpp-python has it)")
        return None

    @classmethod
    def is_installed(cls) -> bool:
        try:
            import llama_cpp  # noqa: F401
        except (ImportError, OSError):  # OSError: the package is there but its shared library is not loadable
            return False
        return True

    # --- loading -----------------------------------------------------------------------------------------------
    def _load(self) -> None:
        from leanserve.engines.llamacpp_lib import load
        from leanserve.engines.sampler import Slot

        self._slot = Slot  # imported here, not at the first token (it imports transformers)
        import torch

        # torch only samples here (one [vocab] row at a time): its OpenMP threads would spin against
        # llama.cpp's own on the same cores
        torch.set_num_threads(1)
        ll = self._ll = load()
        path = Path(self.config.model_path)
        file = gguf_file(path)
        with file.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise EngineError(f"{file} is not a GGUF file (no GGUF magic at its start)")
        mparams = ll.llama_model_default_params()
        # set always: the default (-1, every layer) would fill the GPU of a CUDA build even under --device cpu
        mparams.n_gpu_layers = n_gpu_layers(self.config.device, bool(ll.llama_supports_gpu_offload()),
                                            lambda: self._split(file))
        self._model = ll.llama_model_load_from_file(str(file).encode(), mparams)
        if not self._model:
            raise EngineError(f"llama.cpp could not load {file} (truncated or not a model it knows; its log above says why)")
        self._tokenizer = (Tokenizer.from_pretrained(str(path)) if (path / "tokenizer.json").is_file()
                           else Tokenizer.from_gguf(file))
        native = int(ll.llama_model_n_ctx_train(self._model))
        self._context = min(self.config.max_model_len or min(native, DEFAULT_CONTEXT), native)
        threads = psutil.cpu_count(logical=False) or 1
        cparams = ll.llama_context_default_params()
        cparams.n_ctx = self._context * SEQUENCES
        cparams.n_batch = cparams.n_ubatch = N_BATCH
        cparams.n_seq_max = SEQUENCES
        # a region per sequence: an admitted request always has its whole context, and attention reads only its
        # own cells (one shared pool, kv_unified, decoded 8 sequences 1.2x slower here: docs/engines.md)
        cparams.kv_unified = False
        cparams.n_threads = cparams.n_threads_batch = threads
        # off by default, as llama-cpp-python's Llama(). llama-server turns it on for CPUs: 1.2x the decode
        # speed here, but q8_0's perplexity +0.19% and the greedy France answer flips (docs/engines.md)
        cparams.flash_attn_type = (ll.LLAMA_FLASH_ATTN_TYPE_ENABLED if self.config.flash_attn
                                   else ll.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        cparams.no_perf = True
        self._ctx = ll.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise EngineError(f"llama.cpp could not create a context of {cparams.n_ctx} tokens for {file}")
        self._n_vocab = int(ll.llama_vocab_n_tokens(ll.llama_model_get_vocab(self._model)))
        if self._n_vocab != self._tokenizer.vocab_size:
            log.warning("GGUF vocabulary has %d tokens, the tokenizer %d", self._n_vocab, self._tokenizer.vocab_size)
        self._batch = ll.llama_batch_init(N_BATCH, 0, 1)
        self._kv_bytes = self._kv_cache_bytes(int(ll.llama_n_ctx(self._ctx)))
        log.info("llamacpp: %s, %d sequences x %d tokens of context, KV cache %.0f MiB (f16), %d threads, "
                 "flash attention %s", file.name, SEQUENCES, self._context, self._kv_bytes / 2**20, threads,
                 "on" if self.config.flash_attn else "off")
        self._thread = threading.Thread(target=self._run, name="llamacpp-decode", daemon=True)
        self._thread.start()

    def _split(self, file: Path) -> LayerSplit:
        """The layer split for this file on the GPU: under --vram-budget, else under the whole card's memory."""
        from leanserve import fit
        from leanserve.engines.memory import gpu_total_bytes

        budget = self.config.memory_budget.total_bytes if self.config.memory_budget else gpu_total_bytes()
        if budget is None:
            raise EngineError("cannot read the GPU's memory size (no NVML, no CUDA torch) to split the layers: "
                              "give --vram-budget")
        shape, weights = fit.read_gguf(file)
        context = min(self.config.max_model_len or min(shape.max_position, DEFAULT_CONTEXT), shape.max_position)
        return fit.split_layers(shape, weights, budget, context=context, sequences=SEQUENCES, n_batch=N_BATCH)

    def _kv_cache_bytes(self, n_ctx: int) -> int:
        """K and V in f16 for every layer and position (what llama.cpp allocates for this context)."""
        ll, m = self._ll, self._model
        head_dim = int(ll.llama_model_n_embd(m)) // int(ll.llama_model_n_head(m))
        return n_ctx * int(ll.llama_model_n_layer(m)) * 2 * int(ll.llama_model_n_head_kv(m)) * head_dim * 2

    async def start(self) -> None:
        await asyncio.to_thread(self._load)

    async def shutdown(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        ll = self._ll
        if self._batch is not None:
            ll.llama_batch_free(self._batch)
        if self._ctx:
            ll.llama_free(self._ctx)
        if self._model:
            ll.llama_model_free(self._model)
        self._ctx = self._model = self._batch = None

    @property
    def max_model_len(self) -> int:
        return self._context

    def memory(self) -> MemoryStats:
        weights = int(self._ll.llama_model_size(self._model)) if self._model else None
        return MemoryStats(psutil.Process().memory_info().rss, weights=weights, kv_cache=self._kv_bytes)

    # --- the API -----------------------------------------------------------------------------------------------
    def _submit(self, job: _Job) -> None:
        if self._stop or self._thread is None or not self._thread.is_alive():
            raise EngineError("the llamacpp decode loop is not running")
        self._inbox.put(job)
        self._wake.set()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        import torch

        opts = request.sampling
        if not request.prompt_ids:
            raise EngineError("empty prompt")
        generator = torch.Generator().manual_seed(opts.seed) if opts.seed is not None else None
        constraint = compiler_for(self.tokenizer, self._n_vocab).constraint(opts.structured) if opts.structured else None
        slot = self._slot(opts=opts, generator=generator, prompt_ids=list(request.prompt_ids), constraint=constraint)
        job = _Job(prompt=list(request.prompt_ids), loop=asyncio.get_running_loop(), out=asyncio.Queue(), opts=opts,
                   request_id=request.request_id, slot=slot)
        self._submit(job)
        finished = False
        try:
            while not finished:
                item = await job.out.get()
                if isinstance(item, Exception):
                    raise item
                finished = item.finish_reason is not None
                yield item
        finally:
            if not finished:  # client gone, stop string hit, or cancelled: free the sequence at the next step
                job.cancelled.set()
                self._wake.set()

    async def score(self, prompt_ids: list[int], top_logprobs: int) -> list[TokenLogprob | None]:
        """Prompt logprobs from all-position logits: token i from position i-1 (None for the first).
        Runs in the decode loop beside generations, SCORE_CHUNK positions a step; cancelling the
        awaiting task (client gone, timeout) drops it before its next chunk."""
        if len(prompt_ids) < 2:
            return [None] * len(prompt_ids)
        job = _Job(prompt=list(prompt_ids), loop=asyncio.get_running_loop(), out=asyncio.Queue(),
                   top_logprobs=top_logprobs, scored=[None])
        self._submit(job)
        try:
            item = await job.out.get()
        except asyncio.CancelledError:
            job.cancelled.set()
            self._wake.set()
            raise
        if isinstance(item, Exception):
            raise item
        return item

    # --- the decode loop (its own thread; the only code that touches the llama.cpp context) ------------------
    def _run(self) -> None:
        try:
            while not self._stop:
                self._wake.clear()
                self._admit()
                self._drop_cancelled()
                plan = self._plan()
                if not plan:
                    self._wake.wait()
                    continue
                self._step(plan)
                self._flush()
        except BaseException as exc:  # never leave a waiting client hanging
            log.exception("llamacpp decode loop failed")
            self._fail_all(EngineError(f"llamacpp decode loop failed: {exc}"))
            raise
        self._fail_all(EngineError("the llamacpp engine shut down"))

    def _admit(self) -> None:
        """Waiting jobs, in arrival order, each onto the free sequence `pick_sequence` chooses."""
        free = [i for i, job in enumerate(self._seqs) if job is None]
        while free:
            try:
                job = self._inbox.get_nowait()
            except queue.Empty:
                return
            if job.cancelled.is_set():
                continue
            shared = {i: self._reusable(i, job) for i in free}
            live = {i for i, j in enumerate(self._seqs) if j is not None}
            seq = pick_sequence(free, live, shared, self._released)
            free.remove(seq)
            self._attach(job, seq, shared[seq])

    def _reusable(self, seq: int, job: _Job) -> int:
        """Leading prompt tokens whose KV `seq` already holds. Never the last one: its logits are needed
        and only a decode gives them. 0 for a scoring job, which needs every position's logits."""
        if job.opts is None:
            return 0
        kept, n = self._kept[seq], 0
        for a, b in zip(kept, job.prompt[:-1]):
            if a != b:
                break
            n += 1
        return n

    def _attach(self, job: _Job, seq: int, keep: int) -> None:
        """Give `job` sequence `seq`: keep the KV of the first `keep` positions (the shared prefix), drop the rest."""
        ll = self._ll
        if not ll.llama_memory_seq_rm(ll.llama_get_memory(self._ctx), seq, keep, -1):
            ll.llama_memory_seq_rm(ll.llama_get_memory(self._ctx), seq, -1, -1)  # a partial cut refused: drop it all
            keep = 0
        del self._kept[seq][keep:]
        job.seq_id, job.n_past, job.reused = seq, keep, keep
        self.reused_tokens += keep
        self._seqs[seq] = job

    def _post(self, job: _Job, item: Any) -> None:
        self._outbox.append((job, item))

    def _flush(self) -> None:
        """Deliver the step's items with one call_soon_threadsafe per event loop: each call writes to the
        loop's wake-up pipe, a syscall that 8 sequences would otherwise pay 8 times a step."""
        items, self._outbox = self._outbox, []
        by_loop: dict[int, list[tuple[_Job, Any]]] = {}
        for job, item in items:
            by_loop.setdefault(id(job.loop), []).append((job, item))
        for batch in by_loop.values():
            try:
                batch[0][0].loop.call_soon_threadsafe(_deliver, batch)
            except RuntimeError:  # the event loop is closed (server shut down): nobody is waiting any more
                pass

    def _free(self, job: _Job, why: str, keep_kv: bool = True) -> None:
        """Release the job's sequence for the next request; its KV stays for a prompt that shares its prefix,
        unless `keep_kv` is false (a failed decode leaves it in doubt)."""
        if not keep_kv:
            ll = self._ll
            ll.llama_memory_seq_rm(ll.llama_get_memory(self._ctx), job.seq_id, -1, -1)
            self._kept[job.seq_id].clear()
        self._seqs[job.seq_id] = None
        self._released[job.seq_id] = self.decode_calls
        if job.opts is not None:
            log.info("llamacpp: %s %s: seq %d freed after %d prompt + %d generated tokens (%d prompt tokens' KV "
                     "kept from before); totals: %d decode calls, %d tokens sampled, at most %d sequences in one "
                     "batch, %d prompt tokens reused", job.request_id, why, job.seq_id, len(job.prompt),
                     job.generated, job.reused, self.decode_calls, self.sampled_tokens, self.peak_sequences,
                     self.reused_tokens)

    def _drop_cancelled(self) -> None:
        for job in self._seqs:
            if job is not None and job.cancelled.is_set():
                self._free(job, "cancelled")

    def _fail_all(self, exc: Exception) -> None:
        for job in self._seqs:
            if job is not None:
                job.send(exc)
                self._seqs[job.seq_id] = None
        while True:
            try:
                self._inbox.get_nowait().send(exc)
            except queue.Empty:
                return

    def _plan(self) -> list[tuple[_Job, int, int, bool]]:
        """(job, token, position, wants logits) for this step: a token for each generating sequence first,
        then prompt chunks in sequence order, N_BATCH tokens at most; sent sorted by (sequence, position).

        The order is for llama.cpp: with a KV region per sequence it splits a batch into passes that each
        take sequence ids in the order they first appear, consecutive ids only (llama_batch_allocr::
        split_equal, sequential). Sorted, a prompt chunk on sequence 3 among tokens for 0-2 and 4-7 rides
        in the same pass as them (then its rest in a second); appended after them it would be a third."""
        plan: list[tuple[_Job, int, int, bool]] = []
        live = [j for j in self._seqs if j is not None]
        for job in live:
            if not job.prefilling and job.next_token is not None:
                plan.append((job, job.next_token, job.n_past, True))
        for job in live:
            room = N_BATCH - len(plan)
            if room <= 0:
                break
            if not job.prefilling:
                continue
            take = min(room, len(job.prompt) - job.n_past, SCORE_CHUNK if job.opts is None else N_BATCH)
            last = len(job.prompt) - 1
            for pos in range(job.n_past, job.n_past + take):
                # a generation needs the logits of its last prompt token; scoring those of every position
                # that predicts a prompt token (all but the last)
                wants = pos == last if job.opts is not None else pos < last
                plan.append((job, job.prompt[pos], pos, wants))
        return sorted(plan, key=lambda entry: (entry[0].seq_id, entry[2]))

    def _step(self, plan: list[tuple[_Job, int, int, bool]]) -> None:
        ll, batch = self._ll, self._batch
        for i, (job, token, pos, wants) in enumerate(plan):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = job.seq_id
            batch.logits[i] = wants
        batch.n_tokens = len(plan)
        jobs = list({id(j): j for j, *_ in plan}.values())
        self.peak_sequences = max(self.peak_sequences, len(jobs))
        rc = ll.llama_decode(self._ctx, batch)
        self.decode_calls += 1
        if rc != 0:
            for job in jobs:
                job.send(EngineError(f"llama_decode failed with code {rc}"))
                self._free(job, "failed", keep_kv=False)
            return
        rows: dict[int, list[tuple[int, int]]] = {}
        for i, (job, token, pos, wants) in enumerate(plan):
            job.n_past = max(job.n_past, pos + 1)
            self._kept[job.seq_id].append(token)  # a job's positions come in order, from where its KV ends
            if wants:
                rows.setdefault(id(job), []).append((i, pos))
        for job in jobs:
            if job.opts is None:
                self._score_rows(job, rows.get(id(job), []))
            elif id(job) in rows:
                self._sample(job, rows[id(job)][-1][0])

    def _logits(self, index: int) -> np.ndarray:
        ptr = self._ll.llama_get_logits_ith(self._ctx, index)
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self._n_vocab,)).copy()

    def _sample(self, job: _Job, index: int) -> None:
        import torch

        assert job.opts is not None
        opts = job.opts
        from leanserve.engines.sampler import token_logprob

        logits = torch.from_numpy(self._logits(index))  # [V] raw
        token = job.slot.choose(logits)
        job.generated += 1
        self.sampled_tokens += 1
        lps = None
        if opts.logprobs is not None:
            lps = [token_logprob(torch.log_softmax(logits, dim=-1), token, opts.logprobs)]
        eos = None if opts.ignore_eos else self._tokenizer.eos_token_id if self._tokenizer else None
        reason = "stop" if token == eos else "length" if job.generated >= opts.max_tokens else None
        cached = job.reused if job.generated == 1 else None
        self._post(job, Delta(token_ids=[token], logprobs=lps, finish_reason=reason, cached_tokens=cached))
        if reason is not None:
            self._free(job, reason)
        else:
            job.next_token = token

    def _score_rows(self, job: _Job, rows: list[tuple[int, int]]) -> None:
        """Logprobs of the prompt tokens that these positions predict; the whole list once the prompt is done."""
        import torch

        from leanserve.engines.sampler import chunk_logprobs

        if rows:
            logits = torch.from_numpy(np.stack([self._logits(i) for i, _ in rows]))  # [chunk, V]
            job.scored += chunk_logprobs(logits, [job.prompt[pos + 1] for _, pos in rows], job.top_logprobs)
        if not job.prefilling:
            self._post(job, job.scored)
            self._free(job, "scored")
