"""What each GPU step measures, the same way for leanserve over HTTP and for vLLM direct.

A backend streams one greedy completion (`ignore_eos`) and yields token counts as they arrive;
`measure` (from benchmarks/serve_overhead.py) runs N of them at once and gives tokens/s and median
TTFT. Prompts are words of the generated vocabulary (benchmarks/gpu/model.py), one token each, so
"512 tokens" is exact and a text answer maps back to token ids without a tokenizer.
"""

from __future__ import annotations

import json
import math
import statistics
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from benchmarks.gpu.model import SPECIAL_TOKENS, prompt_text
from benchmarks.serve_overhead import measure


@dataclass(frozen=True)
class Workload:
    output_tokens: int = 128
    streams: tuple[int, ...] = (1, 64)
    repeats: int = 3
    prompt_tokens: int = 32  # the prompt of the tokens/s runs (one, shared by every stream)
    ttft_prompt_tokens: int = 512
    ttft_samples: int = 8  # one at a time ("low load"), each prompt different: no prefix-cache hits
    greedy_tokens: int = 32
    vocab_size: int = 32000

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Backend(Protocol):
    def stream(self, prompt: str, max_tokens: int) -> AsyncIterator[int]:
        """Yields the number of new tokens each time some arrive (the first yield marks TTFT)."""

    async def greedy_ids(self, prompt: str, max_tokens: int) -> list[int]:
        """Token ids of one greedy completion, specials left out (the HTTP text cannot show them)."""


def words_to_ids(text: str) -> list[int]:
    """The generated vocabulary's text back to ids: 'w17 w5' -> [17, 5]."""
    return [int(w[1:]) for w in text.split() if w.startswith("w") and w[1:].isdigit()]


def prompt_ids(prompt: str) -> list[int]:
    return words_to_ids(prompt)


async def speed(backend: Backend, w: Workload, streams: tuple[int, ...] | None = None) -> dict[str, Any]:
    """{streams: median tokens/s and TTFT over w.repeats runs}, after one unmeasured run at each width."""
    prompt = prompt_text(w.prompt_tokens, seed=1, vocab_size=w.vocab_size)

    def stream_fn(i: int) -> AsyncIterator[int]:
        return backend.stream(prompt, w.output_tokens)

    out: dict[str, Any] = {}
    for n in streams or w.streams:
        await measure(stream_fn, n, w.output_tokens)  # warm-up: first-call allocations are not speed
        samples = [await measure(stream_fn, n, w.output_tokens) for _ in range(w.repeats)]
        out[str(n)] = {"tokens_per_s": statistics.median(s["tokens_per_s"] for s in samples),
                       "ttft_s": statistics.median(s["ttft_s"] for s in samples), "samples": samples}
    return out


async def ttft(backend: Backend, w: Workload) -> dict[str, Any]:
    """Time to first token for w.ttft_prompt_tokens-token prompts, one request at a time."""
    times = []
    for i in range(w.ttft_samples + 1):  # the first is a warm-up
        prompt = prompt_text(w.ttft_prompt_tokens, seed=1000 + i, vocab_size=w.vocab_size)
        start, first = time.perf_counter(), None
        async for n in backend.stream(prompt, 2):  # read to the end: an abandoned stream would linger
            if n and first is None:
                first = time.perf_counter() - start
        if first is not None:
            times.append(first)
    times = times[1:]
    return {"prompt_tokens": w.ttft_prompt_tokens, "samples_s": times,
            "p50_s": statistics.median(times) if times else None, "p90_s": nearest_rank(times, 0.9)}


def nearest_rank(values: list[float], q: float) -> float | None:
    """The q-quantile by the nearest-rank method (no interpolation; fine for a handful of samples)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def greedy_prompt(w: Workload) -> str:
    return prompt_text(w.prompt_tokens, seed=7, vocab_size=w.vocab_size)


GREEDY_SPARE_TOKENS = 16  # the text leaves special tokens out, on both sides: ask for more than are compared


async def greedy(backend: Backend, w: Workload) -> dict[str, Any]:
    max_tokens = w.greedy_tokens + GREEDY_SPARE_TOKENS
    ids = await backend.greedy_ids(greedy_prompt(w), max_tokens)
    return {"prompt_tokens": w.prompt_tokens, "max_tokens": max_tokens, "ids": ids}


# --- leanserve (or any OpenAI-compatible server) through HTTP --------------------------------------------------
class HttpBackend:
    """Streaming /v1/completions; the exact token count comes from the final usage chunk."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self.client = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=300,
                                        limits=httpx.Limits(max_connections=512, max_keepalive_connections=512))

    def _body(self, prompt: str, max_tokens: int, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                                "ignore_eos": True, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    async def stream(self, prompt: str, max_tokens: int) -> AsyncIterator[int]:
        first = True
        async with self.client.stream("POST", "/v1/completions", json=self._body(prompt, max_tokens, True)) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if first and chunk.get("choices") and chunk["choices"][0].get("text"):
                    first = False
                    yield 1
                elif chunk.get("usage"):
                    yield chunk["usage"]["completion_tokens"] - (0 if first else 1)

    async def greedy_ids(self, prompt: str, max_tokens: int) -> list[int]:
        r = await self.client.post("/v1/completions", json=self._body(prompt, max_tokens, False))
        r.raise_for_status()
        return words_to_ids(r.json()["choices"][0]["text"])

    async def aclose(self) -> None:
        await self.client.aclose()


# --- vLLM direct: its async engine in this process, no HTTP ----------------------------------------------------
class DirectBackend:
    """vLLM's AsyncLLM (what `vllm serve` and `LLM` run on), fed token ids, streaming deltas."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._n = 0

    def _params(self, max_tokens: int) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, detokenize=False,
                              output_kind=RequestOutputKind.DELTA)

    async def stream(self, prompt: str, max_tokens: int) -> AsyncIterator[int]:
        from vllm.inputs import TokensPrompt

        self._n += 1
        async for out in self.engine.generate(TokensPrompt(prompt_token_ids=prompt_ids(prompt)),
                                              self._params(max_tokens), f"direct-{self._n}"):
            yield len(out.outputs[0].token_ids)

    async def greedy_ids(self, prompt: str, max_tokens: int) -> list[int]:
        from vllm.inputs import TokensPrompt

        self._n += 1
        ids: list[int] = []
        async for out in self.engine.generate(TokensPrompt(prompt_token_ids=prompt_ids(prompt)),
                                              self._params(max_tokens), f"direct-{self._n}"):
            ids += out.outputs[0].token_ids
        return [i for i in ids if i >= len(SPECIAL_TOKENS)]


# --- GPU memory as NVML sees it, sampled on a thread -----------------------------------------------------------
class NvmlPeak:
    """Device-wide NVML 'used' bytes every `interval` s: the baseline before, and the peak while running.
    NVML, not torch, so this process never opens a CUDA context of its own."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval, self.baseline, self.peak, self.error = interval, None, None, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._read: Callable[[], int] | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._read = lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
            self.baseline = self._read()
        except Exception as exc:  # no NVML here (a CPU machine): say so in the results, measure nothing
            self.error = f"{type(exc).__name__}: {exc}"

    def _run(self) -> None:
        while self._read is not None:
            used = self._read()
            self.peak = used if self.peak is None else max(self.peak, used)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> NvmlPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def to_dict(self) -> dict[str, Any]:
        return {"baseline_bytes": self.baseline, "peak_bytes": self.peak, "interval_s": self.interval,
                "error": self.error}
