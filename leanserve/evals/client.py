"""The evals' only way to a model: an OpenAI-compatible HTTP server.

A thin layer over the wire, as lm-eval's `api_models.py`: this module owns concurrency, retries and
timeouts; the tasks only build prompts and read answers. Anything that speaks `/v1/completions` with
`echo` and `logprobs` (leanserve, vLLM, llama.cpp's server) can be evaluated.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")

RETRY_STATUSES = {429, 502, 503, 504}


@dataclass(frozen=True)
class PromptLogprobs:
    """The server's echo of a prompt: one entry per token; the first token has no logprob (None)."""

    tokens: list[str]
    logprobs: list[float | None]
    offsets: list[int]  # character offset of each token in the prompt

    def sum_from(self, char_start: int, char_end: int | None = None) -> tuple[float, int]:
        """Sum of logprobs of the tokens that start at or after `char_start` (and before `char_end`)."""
        total, count = 0.0, 0
        for lp, off in zip(self.logprobs, self.offsets):
            if lp is not None and off >= char_start and (char_end is None or off < char_end):
                total += lp
                count += 1
        return total, count


class EvalClient:
    """Calls one model on one server; `map` runs calls concurrently so a batching server stays busy."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, concurrency: int = 8,
                 timeout: float = 600, retries: int = 5) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model, self.concurrency, self.retries = model, concurrency, retries
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout,
                                  limits=httpx.Limits(max_connections=concurrency + 2))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EvalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the two calls every task is built from -----------------------------------------------------------------
    def prompt_logprobs(self, prompt: str) -> PromptLogprobs:
        """Score a prompt without generating: echo=true, max_tokens=0, logprobs=0."""
        choice = self._completions({"prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 0,
                                    "temperature": 0})["choices"][0]
        lp = choice["logprobs"]
        return PromptLogprobs(lp["tokens"], lp["token_logprobs"], lp["text_offset"])

    def complete(self, prompt: str, *, max_tokens: int, stop: Sequence[str] | None = None) -> tuple[str, int]:
        """Greedy completion; returns the text and the number of generated tokens."""
        body: dict[str, Any] = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
        if stop:
            body["stop"] = list(stop)[:4]
        out = self._completions(body)
        return out["choices"][0]["text"], int(out.get("usage", {}).get("completion_tokens", 0))

    def next_token_logprobs(self, prompt: str, k: int = 20) -> dict[str, float]:
        """The k most likely next tokens after the prompt and their logprobs (one generated token)."""
        choice = self._completions({"prompt": prompt, "max_tokens": 1, "logprobs": k, "temperature": 0})["choices"][0]
        tops = choice["logprobs"]["top_logprobs"]
        return dict(tops[0]) if tops and tops[0] else {}

    def continuation_logprob(self, context: str, continuation: str) -> float:
        """log P(continuation | context): the logprobs of the tokens that start inside the continuation."""
        scored = self.prompt_logprobs(context + continuation)
        total, count = scored.sum_from(len(context))
        if count == 0:
            raise ValueError(f"no token of the continuation {continuation!r} was scored")
        return total

    def timed_stream(self, prompt: str, *, max_tokens: int) -> tuple[float, float, int]:
        """Stream a greedy completion of exactly max_tokens (`ignore_eos`, a vLLM extension leanserve has too);
        returns (seconds to the first text, seconds in all, generated tokens from the usage chunk)."""
        body = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}, "ignore_eos": True}
        started, first, tokens = time.perf_counter(), None, 0
        with self._http.stream("POST", "/v1/completions", json=body) as r:
            if r.is_error:
                r.read()
                raise EvalHTTPError(r)
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[len("data: "):])
                if first is None and any(c.get("text") for c in chunk.get("choices", [])):
                    first = time.perf_counter()
                if chunk.get("usage"):
                    tokens = int(chunk["usage"]["completion_tokens"])
        done = time.perf_counter()
        return (first or done) - started, done - started, tokens

    # --- plumbing -----------------------------------------------------------------------------------------------
    def get(self, path: str) -> httpx.Response:
        return self._request("GET", path)

    def map(self, fn: Callable[[T], R], items: Iterable[T], *, desc: str) -> list[R]:
        """fn over items with `concurrency` requests in flight, in order, with a progress bar."""
        items = list(items)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(tqdm(pool.map(fn, items), total=len(items), desc=desc, unit="req", leave=False))

    def _completions(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/v1/completions", json={"model": self.model, **body}).json()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        delay = 0.5
        for attempt in range(self.retries + 1):
            try:
                r = self._http.request(method, path, **kwargs)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
            else:
                if r.status_code not in RETRY_STATUSES or attempt == self.retries:
                    if r.is_error:
                        raise EvalHTTPError(r)
                    return r
                delay = float(r.headers.get("Retry-After", delay))
            time.sleep(delay)  # back-off between retries of an overloaded server, not synchronisation
            delay = min(delay * 2, 30)
        raise AssertionError("unreachable")


class EvalHTTPError(RuntimeError):
    def __init__(self, response: httpx.Response) -> None:
        try:
            message = response.json()["error"]["message"]
        except Exception:
            message = response.text[:500]
        super().__init__(f"{response.request.method} {response.request.url.path} -> {response.status_code}: {message}")
        self.status_code = response.status_code
