"""ASGI middleware, in the order a request meets it: API-key check (401), draining (503), body-size
limit (413), and, for generation routes, the whole body read under --body-timeout (408) and its cheap
limits checked (400, limits.py), all before the request may take an admission slot; then the request
timeout (504) and per-route counting. The route takes its admission slot (429 + Retry-After) itself,
once its body is valid, through `scope[ADMIT]`; the slot is released here when the response is done.

A slow or stalled uploader therefore holds a socket, never a slot: 8 clients sending a byte a second
used to give every other generation request 429 for as long as they kept sending.

Pure ASGI (not BaseHTTPMiddleware) so streamed responses and client disconnects pass straight through.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.routing import BaseRoute, Match

from leanserve.server.admission import RETRY_AFTER_S, Admission
from leanserve.server.errors import CLIENT_CLOSED, BodyTooLarge, QueueFull, error_body
from leanserve.server.limits import check_body
from leanserve.server.metrics import ServerMetrics
from leanserve.server.state import ServerState

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = {"/health"}
GENERATION_PATHS = {"/v1/chat/completions", "/v1/completions"}
ADMIT = "leanserve.admit"  # scope key: the callable a generation route calls to take its admission slot
log = logging.getLogger("leanserve.requests")


class _Gone(Exception):
    """The client hung up while its body was being read."""


async def _send_error(send: Send, status: int, type_: str, message: str, code: str | None,
                      extra_headers: list[tuple[bytes, bytes]] | None = None, param: str | None = None) -> None:
    body = json.dumps(error_body(message, type_, param, code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    headers += extra_headers or []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def route_label(routes: list[BaseRoute], scope: Scope) -> str:
    """The matched route's template (`/v1/models/{model_id}`), or `other`: a metric label must
    never be a client's path, or every unknown path becomes a new series (200 of them grew /metrics
    from 11 KB to 858 KB). A known path with the wrong method (405) keeps its template."""
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return getattr(route, "path_format", None) or getattr(route, "path", "other")
    return "other"


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that gives the app the body already read, then the client's own messages
    (so disconnects still reach the routes and streaming responses)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class GuardMiddleware:
    def __init__(self, app: ASGIApp, *, state: ServerState, admission: Admission, routes: list[BaseRoute]) -> None:
        settings = state.settings
        self.app = app
        self.state = state
        self.admission = admission
        self.routes = routes  # what metric labels are matched against (route_label)
        self.max_body = settings.max_body_bytes
        self.api_keys = [k.encode() for k in settings.api_keys]
        self.open_paths = OPEN_PATHS | ({"/metrics"} if settings.public_metrics else set())
        self.timeout = settings.request_timeout
        self.body_timeout = settings.body_timeout
        self.metrics: ServerMetrics = state.metrics

    def _authorized(self, scope: Scope) -> bool:
        if not self.api_keys or scope["path"] in self.open_paths:
            return True
        headers = dict(scope.get("headers") or [])
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        token = token.strip()
        # constant time: compare against every key (no early exit), each with compare_digest, so timing
        # reveals neither how much of a key matched nor which key it was
        matched = False
        for key in self.api_keys:
            matched |= hmac.compare_digest(token, key)
        return scheme.lower() == b"bearer" and matched

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = {"status": 500, "started": False, "done": False}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"], seen["started"] = message["status"], True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                seen["done"] = True
            await send(message)

        path = scope["path"]
        generation = path in GENERATION_PATHS and scope["method"] == "POST"
        admitted = False

        def admit() -> None:
            """Called by the route once the body is valid; raises QueueFull (429) past --max-queue."""
            nonlocal admitted
            if admitted:
                return
            if not self.admission.try_enter():
                self.metrics.count_rejected("queue_full")
                raise QueueFull(self.admission.limit, RETRY_AFTER_S)
            admitted = True
            self.metrics.in_flight.inc()

        try:
            if not self._authorized(scope):
                await _send_error(counting_send, 401, "authentication_error",
                                  "Missing or invalid API key. Pass it as 'Authorization: Bearer <key>'.",
                                  "invalid_api_key")
                return
            if self.state.status == "draining" and path not in ("/health", "/metrics"):
                await _send_error(counting_send, 503, "service_unavailable",
                                  "The server is shutting down and takes no new requests; retry on another "
                                  "instance.", "draining")
                return
            headers = dict(scope.get("headers") or [])
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                await self._too_large(counting_send)
                return
            if generation:
                body = await self._read_body(path, receive, counting_send, seen)
                if body is None:
                    return
                if not await self._within_limits(path, body, counting_send):
                    return
                app_receive = _replay(body, receive)
                scope[ADMIT] = admit
            else:
                app_receive = self._limited(receive)
            try:
                if generation and self.timeout is not None:
                    async with asyncio.timeout(self.timeout):
                        await self.app(scope, app_receive, counting_send)
                else:
                    await self.app(scope, app_receive, counting_send)
            except BodyTooLarge:  # read outside FastAPI's body parsing (which reports it itself)
                await self._too_large(counting_send)
            except TimeoutError:
                # the app was cancelled: its engine work has stopped (streams closed, scoring
                # cancelled between chunks), so the engine slot is free
                self.metrics.count_rejected("timeout")
                await self._timed_out(counting_send, seen)
            except asyncio.CancelledError:
                if not seen["started"]:
                    seen["status"] = CLIENT_CLOSED  # the client hung up before any answer: not a server error
                raise
        finally:
            if admitted:
                self.admission.leave()
                self.metrics.in_flight.dec()
            self.metrics.count_request(route_label(self.routes, scope), seen["status"])  # type: ignore[arg-type]

    def _limited(self, receive: Receive) -> Receive:
        """`receive`, raising BodyTooLarge once more than --max-body-bytes came in."""
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        return limited_receive

    async def _read_body(self, path: str, receive: Receive, send: Send, seen: dict[str, Any]) -> bytes | None:
        """The whole body within --body-timeout and --max-body-bytes, or None once answered (408, 413)
        or the client has gone."""
        chunks: list[bytes] = []
        size = 0
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _Gone
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        await self._too_large(send)
                        return None
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            self.metrics.count_rejected("body_timeout")
            await _send_error(send, 408, "timeout_error",
                              f"The request body did not arrive within this server's limit of {self.body_timeout:g} s "
                              f"(--body-timeout; {size} bytes came).", "body_timeout", [(b"connection", b"close")])
        except _Gone:
            seen["status"] = CLIENT_CLOSED
            log.info("POST %s %d client closed the connection while sending its body (%d bytes in %.0f ms)",
                     path, CLIENT_CLOSED, size, (time.perf_counter() - started) * 1000)
        return None

    async def _within_limits(self, path: str, body: bytes, send: Send) -> bool:
        """Check the body's cheap limits in a worker thread (JSON parsing included); answer 400 if not."""
        engine = self.state.engine
        tokenizer = engine.tokenizer if engine is not None else None
        context = engine.max_model_len if engine is not None else 0
        problem = await asyncio.to_thread(check_body, path, body, self.state.settings.max_n, tokenizer, context)
        if problem is None:
            return True
        await _send_error(send, problem.status_code, problem.error_type, problem.message, problem.code,
                          param=problem.param)
        return False

    async def _timed_out(self, send: Send, seen: dict[str, object]) -> None:
        message = f"The request ran longer than this server's limit of {self.timeout:g} s (--request-timeout)."
        if not seen["started"]:
            await _send_error(send, 504, "timeout_error", message, "request_timeout")
        elif not seen["done"]:  # a stream already under way: end it with an error event, as OpenAI does
            event = json.dumps(error_body(message, "timeout_error", None, "request_timeout"))
            await send({"type": "http.response.body", "body": f"data: {event}\n\n".encode(), "more_body": False})

    async def _too_large(self, send: Send) -> None:
        await _send_error(send, 413, "invalid_request_error",
                          f"The request body is larger than this server's limit of {self.max_body} bytes.",
                          "request_too_large")
