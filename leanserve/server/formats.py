"""The two wire formats of generation: chat completions and (legacy) completions.

Both routes run the same core (generation.Generation), which yields choice events. A formatter turns
those events into its route's response models (protocol.py): the chunks of a stream, or the whole
response at the end. Tool-call parsing, echo and the two logprob shapes live here, not in the core.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel

from leanserve.engines.base import Engine, TokenLogprob
from leanserve.server import toolcalls
from leanserve.server.generation import ChoiceEvent, Job
from leanserve.server.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatDelta,
    ChatLogprobs,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    TokenLogprobOut,
    ToolCallFunction,
    ToolCallOut,
    TopLogprob,
    Usage,
)


class Format(Protocol):
    """What the routes need from a wire format."""

    def opening(self) -> list[BaseModel]:
        """Chunks sent before the first event."""

    def chunk(self, event: ChoiceEvent) -> BaseModel | None:
        """The chunk for one event, or None when it shows nothing yet."""

    def usage_chunk(self, usage: Usage) -> BaseModel:
        """The last chunk, with stream_options.include_usage."""

    async def prepare(self) -> None:
        """Work a whole (non-streamed) response needs beyond the events; cancellable."""

    def response(self, per_choice: dict[int, list[ChoiceEvent]], usage: Usage) -> BaseModel:
        """The whole response, from every event by choice."""


def _tool_calls(calls: list[toolcalls.ToolCall], streamed: bool) -> list[ToolCallOut]:
    return [ToolCallOut(index=k if streamed else None, id=c.id, function=ToolCallFunction(name=c.name, arguments=c.arguments))
            for k, c in enumerate(calls)]


def _finish_reason(events: list[ChoiceEvent]) -> str:
    return events[-1].finish_reason or "length" if events else "length"


class ChatFormat:
    def __init__(self, engine: Engine, rid: str, created: int, model: str, n: int, logprobs: bool,
                 tool_mode: str, tool_names: set[str]) -> None:
        self.engine, self.n, self.logprobs = engine, n, logprobs
        self.base = {"id": rid, "created": created, "model": model}
        self.tool_mode, self.tool_names = tool_mode, tool_names
        self._tools = [toolcalls.ToolStream(tool_mode, tool_names) for _ in range(n)]

    def _logprobs(self, entries: list[TokenLogprob]) -> ChatLogprobs | None:
        if not self.logprobs:
            return None
        strings = self.engine.tokenizer.token_strings

        def one(token_id: int, logprob: float) -> TopLogprob:
            text = strings([token_id])[0]
            return TopLogprob(token=text, logprob=logprob, bytes=list(text.encode("utf-8")))

        return ChatLogprobs(content=[TokenLogprobOut(**one(e.token_id, e.logprob).model_dump(),
                                                     top_logprobs=[one(t, lp) for t, lp in e.top]) for e in entries])

    def opening(self) -> list[BaseModel]:
        return [ChatCompletionChunk(**self.base, choices=[ChatChunkChoice(index=i, delta=ChatDelta(role="assistant", content=""))])
                for i in range(self.n)]

    def chunk(self, event: ChoiceEvent) -> BaseModel | None:
        tools = self._tools[event.index]
        content, reason, calls = tools.push(event.text), event.finish_reason, []
        if reason is not None:
            held, calls = tools.end()
            content += held
            if calls:
                reason = "tool_calls"
        if not content and not calls and reason is None and not (self.logprobs and event.logprobs):
            return None
        delta = ChatDelta(content=content or None, tool_calls=_tool_calls(calls, streamed=True) or None)
        choice = ChatChunkChoice(index=event.index, delta=delta, logprobs=self._logprobs(event.logprobs), finish_reason=reason)
        return ChatCompletionChunk(**self.base, choices=[choice])

    def usage_chunk(self, usage: Usage) -> BaseModel:
        return ChatCompletionChunk(**self.base, choices=[], usage=usage)

    async def prepare(self) -> None:
        return None

    def response(self, per_choice: dict[int, list[ChoiceEvent]], usage: Usage) -> BaseModel:
        choices = []
        for i, events in sorted(per_choice.items()):
            content, calls = toolcalls.finish(self.tool_mode, "".join(ev.text for ev in events), self.tool_names)
            message = AssistantMessage(content=content, tool_calls=_tool_calls(calls, streamed=False) or None)
            choices.append(ChatChoice(index=i, message=message,
                                      logprobs=self._logprobs([lp for ev in events for lp in ev.logprobs]),
                                      finish_reason="tool_calls" if calls else _finish_reason(events)))
        return ChatCompletion(**self.base, choices=choices, usage=usage)


class CompletionFormat:
    """Choice index = prompt number x n + sample number, as OpenAI numbers them. With echo, the prompt
    text comes first; with echo and logprobs, the prompt's own logprobs too (scored in `prepare`)."""

    def __init__(self, engine: Engine, rid: str, created: int, model: str, jobs: list[Job], n: int,
                 echo: bool, logprobs: int | None) -> None:
        self.engine, self.jobs, self.n, self.echo, self.logprobs = engine, jobs, n, echo, logprobs
        self.base = {"id": rid, "created": created, "model": model}
        self._scores: dict[int, list[TokenLogprob | None]] = {}  # by prompt number

    def _logprobs(self, entries: list[TokenLogprob | None], token_ids: list[int]) -> CompletionLogprobs:
        strings = self.engine.tokenizer.token_strings
        texts = strings(token_ids)
        offsets, pos = [], 0
        for s in texts:
            offsets.append(pos)
            pos += len(s)
        return CompletionLogprobs(
            tokens=texts,
            token_logprobs=[None if e is None else e.logprob for e in entries],
            top_logprobs=[None if e is None else {strings([t])[0]: lp for t, lp in e.top} or {s: e.logprob}
                          for e, s in zip(entries, texts)],
            text_offset=offsets,
        )

    def _chunk(self, index: int, text: str, finish_reason: str | None = None,
               logprobs: CompletionLogprobs | None = None) -> Completion:
        return Completion(**self.base, choices=[CompletionChoice(index=index, text=text, logprobs=logprobs,
                                                                 finish_reason=finish_reason)])

    def opening(self) -> list[BaseModel]:
        chunks: list[BaseModel] = []
        if self.echo:
            chunks += [self._chunk(job.index, self.engine.tokenizer.decode(job.prompt_ids)) for job in self.jobs]
        chunks += [self._chunk(job.index, "", "length") for job in self.jobs if job.opts.max_tokens == 0]
        return chunks

    def chunk(self, event: ChoiceEvent) -> BaseModel | None:
        logprobs = self._logprobs(list(event.logprobs), event.token_ids) if self.logprobs is not None else None
        return self._chunk(event.index, event.text, event.finish_reason, logprobs)

    def usage_chunk(self, usage: Usage) -> BaseModel:
        return Completion(**self.base, choices=[], usage=usage)

    async def prepare(self) -> None:
        if not (self.echo and self.logprobs is not None):
            return
        for job in self.jobs:
            prompt = job.index // self.n
            if prompt not in self._scores:  # cancellable: scoring stops between chunks
                self._scores[prompt] = await self.engine.score(job.prompt_ids, self.logprobs)

    def response(self, per_choice: dict[int, list[ChoiceEvent]], usage: Usage) -> BaseModel:
        choices = []
        for job in self.jobs:
            events = per_choice[job.index]
            gen_ids = [t for ev in events for t in ev.token_ids]
            logprobs = None
            if self.logprobs is not None:
                entries: list[TokenLogprob | None] = [lp for ev in events for lp in ev.logprobs]
                token_ids = gen_ids[: len(entries)]
                if self.echo:
                    entries = self._scores[job.index // self.n] + entries
                    token_ids = job.prompt_ids + token_ids
                logprobs = self._logprobs(entries, token_ids)
            prefix = self.engine.tokenizer.decode(job.prompt_ids) if self.echo else ""
            choices.append(CompletionChoice(index=job.index, text=prefix + "".join(ev.text for ev in events),
                                            logprobs=logprobs, finish_reason=_finish_reason(events)))
        return Completion(**self.base, choices=choices, usage=usage)
