"""The OpenAI-compatible routes. They validate, build prompts, check limits, and shape responses;
generation itself goes through `generation.run_choice`, the same path for every engine."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from leanserve.engines.base import Engine, TokenLogprob
from leanserve.engines.grammar import check_schema
from leanserve.errors import ContextLengthExceeded, InvalidRequest, ModelNotFound
from leanserve.server import toolcalls
from leanserve.server.errors import ClientDisconnected
from leanserve.server.generation import ChoiceEvent, merge, run_choice
from leanserve.server.middleware import ADMIT
from leanserve.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
    Usage,
    _SamplingFields,
)
from leanserve.server.state import ServerState

log = logging.getLogger("leanserve.requests")
router = APIRouter()
T = TypeVar("T")


def _state(request: Request) -> ServerState:
    return request.app.state.leanserve


def _check_model(state: ServerState, model: str) -> None:
    if model not in (state.served_model, state.spec.name):
        shown = model if len(model) <= 80 else model[:80] + "..."  # never echo a whole (hostile) payload back
        raise ModelNotFound(f"The model {shown!r} does not exist on this server; it serves {state.served_model!r}.")


def _serving(request: Request, model: str) -> tuple[ServerState, Engine]:
    """What every generation route checks first: the engine is ready and the model is the one served."""
    state = _state(request)
    engine = state.ready_engine()
    _check_model(state, model)
    return state, engine


def _max_tokens(engine: Engine, prompt_len: int, requested: int | None, param: str) -> int:
    """Check the context window; default max_tokens to what is left of it."""
    limit = engine.max_model_len
    if prompt_len >= limit:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {limit} tokens, but the prompt has {prompt_len} tokens.",
            param=param,
        )
    if requested is None:
        return limit - prompt_len
    if prompt_len + requested > limit:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_len + requested} tokens ({prompt_len} in the prompt, {requested} for the completion). "
            "Shorten the prompt or lower max_tokens.",
            param="max_tokens",
        )
    return requested


def _check_n(state: ServerState, n: int) -> None:
    if n > state.settings.max_n:
        raise InvalidRequest(f"n must be at most {state.settings.max_n} on this server", param="n")


async def _check_sampling(engine: Engine, body: _SamplingFields) -> None:
    """What needs the model to check: token ids within its vocabulary, a schema its grammar can take."""
    vocab = engine.tokenizer.vocab_size
    for param, ids in body.token_ids_used():
        bad = [t for t in ids if t >= vocab]
        if bad:
            raise InvalidRequest(f"token id {bad[0]} is out of the vocabulary (size {vocab})", param=param)
    structured = body.structured_output()
    if structured is not None:
        try:
            await asyncio.to_thread(check_schema, structured)  # parsing a schema can take a while
        except InvalidRequest as exc:
            exc.param = body.structured_param
            raise


async def _wait_disconnect(request: Request) -> None:
    """Returns when the client goes away (the ASGI receive channel yields http.disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _until_disconnect(request: Request, work: Awaitable[T], route: str, started: float) -> T:
    """Run the work of a non-streamed request while watching its connection; if the client leaves,
    cancel the work (engine streams close, scoring stops at its next chunk), wait until it has
    stopped, and raise ClientDisconnected (logged once, counted 499)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.create_task(_wait_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            # wait until it has stopped (cancel() only asks): reading its state before raised
            # InvalidStateError, a 500 for every client that hung up (found by the fuzz tests)
            await asyncio.wait({task})
    if task.cancelled():
        raise ClientDisconnected(route, started)
    return task.result()


async def _gather(events: AsyncIterator[ChoiceEvent], n: int) -> list[list[ChoiceEvent]]:
    """Every event of a non-streamed request, by choice."""
    per_choice: list[list[ChoiceEvent]] = [[] for _ in range(n)]
    async for event in events:
        per_choice[event.index].append(event)
    return per_choice


def _admit(request: Request) -> None:
    """Take an admission slot (429 past --max-queue): only once the body has passed every cheap check,
    so invalid or slow requests never hold one. The middleware releases it when the response ends."""
    request.scope[ADMIT]()


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _log(state: ServerState, rid: str, route: str, prompt_tokens: int, completion_tokens: int, started: float) -> None:
    log.info("%s %s profile=%s prompt_tokens=%d completion_tokens=%d latency_ms=%.0f", rid, route,
             state.spec.name, prompt_tokens, completion_tokens, (time.perf_counter() - started) * 1000)


# --- logprob shapes -----------------------------------------------------------------------------------------------
def _chat_logprobs(engine: Engine, entries: list[TokenLogprob]) -> dict[str, Any]:
    tok = engine.tokenizer

    def one(token_id: int, logprob: float) -> dict[str, Any]:
        text = tok.token_strings([token_id])[0]
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return {"content": [{**one(e.token_id, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]}
                        for e in entries]}


def _legacy_logprobs(engine: Engine, entries: list[TokenLogprob | None], token_ids: list[int]) -> dict:
    """OpenAI's completions shape: tokens, token_logprobs (None for a first prompt token), top_logprobs."""
    tok = engine.tokenizer
    strings = tok.token_strings(token_ids)
    offsets, pos = [], 0
    for s in strings:
        offsets.append(pos)
        pos += len(s)
    return {
        "tokens": strings,
        "token_logprobs": [None if e is None else e.logprob for e in entries],
        "top_logprobs": [None if e is None else {tok.token_strings([t])[0]: lp for t, lp in e.top} or
                         {s: e.logprob} for e, s in zip(entries, strings)],
        "text_offset": offsets,
    }


# --- routes -------------------------------------------------------------------------------------------------------
@router.api_route("/health", methods=["GET", "HEAD"])
async def health(request: Request) -> JSONResponse:
    state = _state(request)
    body = {"status": state.status, "profile": state.spec.name, "model": state.served_model,
            "engine": state.engine_name, "engine_reason": state.engine_reason}
    if state.error:
        body["error"] = state.error
    return JSONResponse(body, status_code=200 if state.status == "ready" else 503)


@router.get("/metrics")
async def metrics(request: Request) -> PlainTextResponse:
    return PlainTextResponse(generate_latest(_state(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _model_card(state: ServerState) -> dict[str, Any]:
    return {"id": state.served_model, "object": "model", "created": state.created, "owned_by": "leanserve",
            "profile": state.spec.name, "max_model_len": state.engine.max_model_len if state.engine else None}


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [_model_card(_state(request))]}


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> dict[str, Any]:
    state = _state(request)
    _check_model(state, model_id)
    return _model_card(state)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    started = time.perf_counter()
    state, engine = _serving(request, body.model)
    _check_n(state, body.n)
    if not engine.tokenizer.has_chat_template:
        raise InvalidRequest("This model has no chat template; use /v1/completions.", param="messages")
    await _check_sampling(engine, body)
    mode, names = body.tool_mode, {t.function.name for t in body.tools or []}
    offered = body.tool_dicts if mode != "none" else []
    knows_tools = engine.tokenizer.template_knows_tools
    messages = toolcalls.template_messages(body.messages, offered, knows_tools)
    _admit(request)
    prompt_ids = await asyncio.to_thread(engine.tokenizer.apply_chat_template, messages,  # off the event loop
                                         offered if knows_tools else None)
    max_tokens = _max_tokens(engine, len(prompt_ids), body.requested_max_tokens, "messages")
    rid = f"chatcmpl-{uuid.uuid4().hex}"
    streams = [run_choice(engine, state.metrics, rid, i, prompt_ids, body.sampling_options(max_tokens, body.logprobs_k, i),
                          body.stops, started) for i in range(body.n)]
    created = int(time.time())
    base = {"id": rid, "created": created, "model": body.model}

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def sse() -> AsyncIterator[str]:
            completion_tokens = 0
            tools = [toolcalls.ToolStream(mode, names) for _ in range(body.n)]
            for i in range(body.n):
                yield _sse({**base, "object": "chat.completion.chunk",
                            "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                         "logprobs": None, "finish_reason": None}]})
            async for ev in merge(streams):
                completion_tokens += len(ev.token_ids)
                text, reason, delta = tools[ev.index].push(ev.text), ev.finish_reason, {}
                if reason is not None:
                    held, calls = tools[ev.index].end()
                    text += held
                    if calls:
                        delta["tool_calls"] = [c.to_openai(k) for k, c in enumerate(calls)]
                        reason = "tool_calls"
                if text:
                    delta["content"] = text
                if not delta and reason is None and not (body.logprobs and ev.logprobs):
                    continue
                choice = {"index": ev.index, "delta": delta,
                          "logprobs": _chat_logprobs(engine, ev.logprobs) if body.logprobs else None,
                          "finish_reason": reason}
                yield _sse({**base, "object": "chat.completion.chunk", "choices": [choice]})
            if include_usage:
                usage = Usage(prompt_tokens=len(prompt_ids), completion_tokens=completion_tokens,
                              total_tokens=len(prompt_ids) + completion_tokens)
                yield _sse({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage.model_dump()})
            yield "data: [DONE]\n\n"
            _log(state, rid, "chat.stream", len(prompt_ids), completion_tokens, started)

        return StreamingResponse(sse(), media_type="text/event-stream")

    per_choice = await _until_disconnect(request, _gather(merge(streams), body.n), "/v1/chat/completions", started)
    choices, completion_tokens = [], 0
    for i, events in enumerate(per_choice):
        entries = [lp for ev in events for lp in ev.logprobs]
        completion_tokens += sum(len(ev.token_ids) for ev in events)
        content, calls = toolcalls.finish(mode, "".join(ev.text for ev in events), names)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = [c.to_openai() for c in calls]
        reason = "tool_calls" if calls else (events[-1].finish_reason if events else "length")
        choices.append({"index": i, "message": message,
                        "logprobs": _chat_logprobs(engine, entries) if body.logprobs else None,
                        "finish_reason": reason})
    usage = Usage(prompt_tokens=len(prompt_ids), completion_tokens=completion_tokens,
                  total_tokens=len(prompt_ids) + completion_tokens)
    _log(state, rid, "chat", len(prompt_ids), completion_tokens, started)
    return {**base, "object": "chat.completion", "choices": choices, "usage": usage.model_dump()}


def _all_prompt_ids(engine: Engine, prompts: list[str | list[int]]) -> list[list[int]]:
    """Blocking (the tokenizer): run it in a worker thread."""
    return [_prompt_ids(engine, p) for p in prompts]


def _prompt_ids(engine: Engine, prompt: str | list[int]) -> list[int]:
    if isinstance(prompt, str):
        ids = engine.tokenizer.encode(prompt)
        if not ids:
            raise InvalidRequest("prompt must not be empty", param="prompt")
        return ids
    vocab = engine.tokenizer.vocab_size
    bad = [t for t in prompt if t >= vocab]
    if bad:
        raise InvalidRequest(f"token id {bad[0]} is out of the vocabulary (size {vocab})", param="prompt")
    return prompt


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Any:
    started = time.perf_counter()
    state, engine = _serving(request, body.model)
    raw_prompts = body.prompts()
    _check_n(state, body.n * len(raw_prompts))
    await _check_sampling(engine, body)
    if body.stream and body.echo and body.logprobs is not None:
        raise InvalidRequest("echo with logprobs is not supported when streaming", param="echo")
    _admit(request)
    prompts = await asyncio.to_thread(_all_prompt_ids, engine, raw_prompts)  # off the event loop
    limits = [_max_tokens(engine, len(ids), body.max_tokens, "prompt") for ids in prompts]
    rid = f"cmpl-{uuid.uuid4().hex}"
    base = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": body.model}
    # choice index = prompt number * n + sample number, as OpenAI numbers them
    jobs = [(p * body.n + i, ids, limits[p], i) for p, ids in enumerate(prompts) for i in range(body.n)]
    generating = [j for j in jobs if j[2] > 0]
    streams = [run_choice(engine, state.metrics, rid, idx, ids, body.sampling_options(mt, body.logprobs, i),
                          body.stops, started) for idx, ids, mt, i in generating]
    prompt_tokens = sum(len(ids) for ids in prompts) * body.n

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def sse() -> AsyncIterator[str]:
            completion_tokens = 0
            if body.echo:
                for idx, ids, _, _ in jobs:
                    yield _sse({**base, "choices": [{"index": idx, "text": engine.tokenizer.decode(ids),
                                                     "logprobs": None, "finish_reason": None}]})
            for idx, _, mt, _ in jobs:
                if mt == 0:
                    yield _sse({**base, "choices": [{"index": idx, "text": "", "logprobs": None, "finish_reason": "length"}]})
            async for ev in merge(streams):
                completion_tokens += len(ev.token_ids)
                lp = _legacy_logprobs(engine, list(ev.logprobs), ev.token_ids) if body.logprobs is not None else None
                yield _sse({**base, "choices": [{"index": ev.index, "text": ev.text, "logprobs": lp,
                                                 "finish_reason": ev.finish_reason}]})
            if include_usage:
                usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                              total_tokens=prompt_tokens + completion_tokens)
                yield _sse({**base, "choices": [], "usage": usage.model_dump()})
            yield "data: [DONE]\n\n"
            _log(state, rid, "completions.stream", prompt_tokens, completion_tokens, started)

        return StreamingResponse(sse(), media_type="text/event-stream")

    async def work() -> tuple[dict[int, list[ChoiceEvent]], dict[int, list[TokenLogprob | None]]]:
        per_index: dict[int, list[ChoiceEvent]] = {}
        if streams:
            collected = await _gather(merge(streams), len(jobs))
            per_index = {idx: collected[idx] for idx, *_ in generating}
        scores: dict[int, list[TokenLogprob | None]] = {}
        if body.echo and body.logprobs is not None:
            for p, ids in enumerate(prompts):
                scores[p] = await engine.score(ids, body.logprobs)  # cancellable: stops between chunks
        return per_index, scores

    per_index, scores = await _until_disconnect(request, work(), "/v1/completions", started)
    choices, completion_tokens = [], 0
    for idx, ids, _, _ in jobs:
        events = per_index.get(idx, [])
        gen_ids = [t for ev in events for t in ev.token_ids]
        completion_tokens += len(gen_ids)
        text = "".join(ev.text for ev in events)
        prefix = engine.tokenizer.decode(ids) if body.echo else ""
        logprobs = None
        if body.logprobs is not None:
            entries: list[TokenLogprob | None] = [lp for ev in events for lp in ev.logprobs]
            token_ids = gen_ids[: len(entries)]
            if body.echo:
                entries = scores[idx // body.n] + entries
                token_ids = ids + token_ids
            logprobs = _legacy_logprobs(engine, entries, token_ids)
        choices.append({"index": idx, "text": prefix + text, "logprobs": logprobs,
                        "finish_reason": events[-1].finish_reason if events else "length"})
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                  total_tokens=prompt_tokens + completion_tokens)
    _log(state, rid, "completions", prompt_tokens, completion_tokens, started)
    return {**base, "choices": choices, "usage": usage.model_dump()}


# --- tokenizer routes (vLLM's shapes) -----------------------------------------------------------------------------
@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> dict[str, Any]:
    """Token ids of a prompt or of chat messages (rendered as /v1/chat/completions renders them)."""
    state, engine = _serving(request, body.model or _state(request).served_model)
    tok = engine.tokenizer
    if body.messages is not None:
        ids = await asyncio.to_thread(tok.apply_chat_template, toolcalls.template_messages(body.messages, [], False))
    else:
        ids = await asyncio.to_thread(tok.encode, body.prompt or "")
    return {"count": len(ids), "max_model_len": engine.max_model_len, "tokens": ids,
            "token_strs": tok.token_strings(ids) if body.return_token_strs else None}


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request) -> dict[str, Any]:
    state, engine = _serving(request, body.model or _state(request).served_model)
    vocab = engine.tokenizer.vocab_size
    bad = [t for t in body.tokens if t >= vocab]
    if bad:
        raise InvalidRequest(f"token id {bad[0]} is out of the vocabulary (size {vocab})", param="tokens")
    return {"prompt": engine.tokenizer.decode(body.tokens)}
