"""The OpenAI-compatible routes. They validate, build prompts and check limits; then both generation
routes go through one core (`generation.Generation`) and `_respond`, differing only in their formatter
(formats.py). The same path for every engine."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from leanserve.engines.base import Engine
from leanserve.engines.grammar import check_schema
from leanserve.errors import ContextLengthExceeded, InvalidRequest, ModelNotFound
from leanserve.server import toolcalls
from leanserve.server.errors import ClientDisconnected
from leanserve.server.formats import ChatFormat, CompletionFormat, Format
from leanserve.server.generation import ChoiceEvent, Generation, Job
from leanserve.server.middleware import ADMIT
from leanserve.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
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


def _admit(request: Request) -> None:
    """Take an admission slot (429 past --max-queue): only once the body has passed every cheap check,
    so invalid or slow requests never hold one. The middleware releases it when the response ends."""
    request.scope[ADMIT]()


def _sse(chunk: BaseModel) -> str:
    return f"data: {chunk.model_dump_json()}\n\n"


def _log(state: ServerState, rid: str, route: str, prompt_tokens: int, completion_tokens: int, started: float) -> None:
    log.info("%s %s profile=%s prompt_tokens=%d completion_tokens=%d latency_ms=%.0f", rid, route,
             state.spec.name, prompt_tokens, completion_tokens, (time.perf_counter() - started) * 1000)


async def _respond(request: Request, state: ServerState, gen: Generation, fmt: Format,
                   body: ChatCompletionRequest | CompletionRequest, name: str, route: str) -> Response:
    """The one way a generation request is answered: a stream of the formatter's chunks, or (after
    watching the connection while it runs) the formatter's whole response."""
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def sse() -> AsyncIterator[str]:
            for chunk in fmt.opening():
                yield _sse(chunk)
            async for event in gen.events():
                if (chunk := fmt.chunk(event)) is not None:
                    yield _sse(chunk)
            if include_usage:
                yield _sse(fmt.usage_chunk(gen.usage()))
            yield "data: [DONE]\n\n"
            _log(state, gen.request_id, f"{name}.stream", gen.prompt_tokens, gen.completion_tokens, gen.started)

        return StreamingResponse(sse(), media_type="text/event-stream")

    async def whole() -> dict[int, list[ChoiceEvent]]:
        per_choice = await gen.collect()
        await fmt.prepare()
        return per_choice

    per_choice = await _until_disconnect(request, whole(), route, gen.started)
    _log(state, gen.request_id, name, gen.prompt_tokens, gen.completion_tokens, gen.started)
    return JSONResponse(fmt.response(per_choice, gen.usage()).model_dump(mode="json"))


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
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
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
    jobs = [Job(i, prompt_ids, body.sampling_options(max_tokens, body.logprobs_k, i)) for i in range(body.n)]
    gen = Generation(engine, state.metrics, rid, jobs, body.stops, started, prompt_tokens=len(prompt_ids))
    fmt = ChatFormat(engine, rid, int(time.time()), body.model, body.n, body.logprobs, mode, names)
    return await _respond(request, state, gen, fmt, body, "chat", "/v1/chat/completions")


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
async def completions(body: CompletionRequest, request: Request) -> Response:
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
    # choice index = prompt number * n + sample number, as OpenAI numbers them
    jobs = [Job(p * body.n + i, ids, body.sampling_options(limits[p], body.logprobs, i))
            for p, ids in enumerate(prompts) for i in range(body.n)]
    gen = Generation(engine, state.metrics, rid, jobs, body.stops, started,
                     prompt_tokens=sum(len(ids) for ids in prompts) * body.n)
    fmt = CompletionFormat(engine, rid, int(time.time()), body.model, jobs, body.n, body.echo, body.logprobs)
    return await _respond(request, state, gen, fmt, body, "completions", "/v1/completions")


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
