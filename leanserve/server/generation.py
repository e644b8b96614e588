"""The generation core both routes share: a request's choices run on the engine and merge into one
stream of choice events, with usage counted as they pass.

This is where engine deltas become text: detokenization and stop strings (TextStream), metrics
(ServerMetrics.observe_stream), and cancellation (closing the engine stream aborts the request).
What the events look like on the wire is the formatters' job (formats.py), one per route.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from leanserve.engines.base import Delta, Engine, GenerationRequest, SamplingOptions, TokenLogprob
from leanserve.server.metrics import ServerMetrics
from leanserve.server.protocol import PromptTokensDetails, Usage
from leanserve.server.textstream import TextStream


@dataclass
class ChoiceEvent:
    """A piece of one choice's output; finish_reason is set on its last event."""

    index: int
    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    cached_tokens: int | None = None  # the engine's, on the first event: prompt tokens it did not compute again


async def run_choice(
    engine: Engine,
    metrics: ServerMetrics,
    request_id: str,
    index: int,
    prompt_ids: list[int],
    opts: SamplingOptions,
    stops: list[str],
    started: float,
) -> AsyncIterator[ChoiceEvent]:
    text = TextStream(engine.tokenizer, stops)
    request = GenerationRequest(f"{request_id}-{index}", prompt_ids, opts)
    stream = metrics.observe_stream(engine.generate(request), len(prompt_ids), started)
    stop_ids = set(opts.stop_token_ids)
    try:
        async for delta in stream:
            ids = delta.token_ids
            cut = next((k for k, t in enumerate(ids) if t in stop_ids), None) if stop_ids else None
            if cut is not None:  # a stop token ends the answer, like EOS: counted, not shown
                delta = Delta(ids[: cut + 1], (delta.logprobs or [])[: cut + 1] or None, "stop", delta.cached_tokens)
                piece = text.push(ids[:cut])
            else:
                piece = text.push(ids)
            reason = "stop" if text.stopped else delta.finish_reason
            if reason is not None and not text.stopped:
                piece += text.flush()
            yield ChoiceEvent(index, piece, delta.token_ids, delta.logprobs or [], reason, delta.cached_tokens)
            if text.stopped or cut is not None:
                return  # closing `stream` (in finally) aborts the engine request
    finally:
        await stream.aclose()


async def merge(streams: list[AsyncIterator[ChoiceEvent]]) -> AsyncIterator[ChoiceEvent]:
    """Interleave events of several choices as they arrive; cancelling the merge cancels them all."""
    if len(streams) == 1:
        try:
            async for event in streams[0]:
                yield event
        finally:
            await streams[0].aclose()  # type: ignore[attr-defined]
        return
    queue: asyncio.Queue[ChoiceEvent | BaseException | None] = asyncio.Queue()

    async def pump(stream: AsyncIterator[ChoiceEvent]) -> None:
        try:
            async for event in stream:
                await queue.put(event)
            await queue.put(None)
        except Exception as exc:  # forwarded to the consumer, which re-raises it
            await queue.put(exc)

    tasks = [asyncio.create_task(pump(s)) for s in streams]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclass(frozen=True)
class Job:
    """One choice to generate: its index in the response, its prompt and its options."""

    index: int
    prompt_ids: list[int]
    opts: SamplingOptions


class Generation:
    """One request's choices. `events()` streams them merged; `collect()` gathers them by choice.
    A job with max_tokens 0 generates nothing (its choice is empty, finish_reason "length")."""

    def __init__(self, engine: Engine, metrics: ServerMetrics, request_id: str, jobs: list[Job],
                 stops: list[str], started: float, prompt_tokens: int) -> None:
        self.engine, self.metrics, self.request_id = engine, metrics, request_id
        self.jobs, self.stops, self.started = jobs, stops, started
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.cached_tokens: int | None = None  # None: the engine does not report a prefix cache

    async def events(self) -> AsyncIterator[ChoiceEvent]:
        streams = [run_choice(self.engine, self.metrics, self.request_id, job.index, job.prompt_ids, job.opts,
                              self.stops, self.started) for job in self.jobs if job.opts.max_tokens > 0]
        if not streams:
            return
        async for event in merge(streams):
            self.completion_tokens += len(event.token_ids)
            if event.cached_tokens is not None:
                self.cached_tokens = (self.cached_tokens or 0) + event.cached_tokens
            yield event

    async def collect(self) -> dict[int, list[ChoiceEvent]]:
        per_choice: dict[int, list[ChoiceEvent]] = {job.index: [] for job in self.jobs}
        async for event in self.events():
            per_choice[event.index].append(event)
        return per_choice

    def usage(self) -> Usage:
        # capped: chat counts its prompt once however many choices (n) reuse it
        details = (None if self.cached_tokens is None
                   else PromptTokensDetails(cached_tokens=min(self.cached_tokens, self.prompt_tokens)))
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                     total_tokens=self.prompt_tokens + self.completion_tokens, prompt_tokens_details=details)
