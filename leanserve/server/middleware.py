"""ASGI middleware, in the order a request meets it: API-key check (401), draining (503), body-size
limit (413), admission control (429 + Retry-After), request timeout (504), and per-route counting.

Pure ASGI (not BaseHTTPMiddleware) so streamed responses and client disconnects pass straight through.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from leanserve.server.admission import RETRY_AFTER_S, Admission
from leanserve.server.errors import BodyTooLarge, error_body
from leanserve.server.metrics import ServerMetrics
from leanserve.server.state import ServerState

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = {"/health"}
GENERATION_PATHS = {"/v1/chat/completions", "/v1/completions"}
CLIENT_CLOSED = 499  # nginx's "client closed request": counted in leanserve_requests_total, never sent


async def _send_error(send: Send, status: int, type_: str, message: str, code: str,
                      extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(error_body(message, type_, None, code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    headers += extra_headers or []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    def __init__(self, app: ASGIApp, *, state: ServerState, admission: Admission) -> None:
        settings = state.settings
        self.app = app
        self.state = state
        self.admission = admission
        self.max_body = settings.max_body_bytes
        self.api_keys = [k.encode() for k in settings.api_keys]
        self.open_paths = OPEN_PATHS | ({"/metrics"} if settings.public_metrics else set())
        self.timeout = settings.request_timeout
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
        generation = path in GENERATION_PATHS
        admitted = False
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
                if not self.admission.try_enter():
                    self.metrics.count_rejected("queue_full")
                    retry = str(RETRY_AFTER_S).encode()
                    await _send_error(counting_send, 429, "rate_limit_error",
                                      f"The server is at its limit of {self.admission.limit} requests in flight "
                                      f"(--max-queue); retry after {retry.decode()} s.", "queue_full",
                                      [(b"retry-after", retry)])
                    return
                admitted = True
            received = 0

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body:
                        raise BodyTooLarge(self.max_body)
                return message

            try:
                if generation and self.timeout is not None:
                    async with asyncio.timeout(self.timeout):
                        await self.app(scope, limited_receive, counting_send)
                else:
                    await self.app(scope, limited_receive, counting_send)
            except BodyTooLarge:  # read outside FastAPI's body parsing (which reports it itself)
                await self._too_large(counting_send)
            except TimeoutError:
                # the app was cancelled: its engine streams are closed, so the engine slot is free
                self.metrics.count_rejected("timeout")
                await self._timed_out(counting_send, seen)
            except asyncio.CancelledError:
                if not seen["started"]:
                    seen["status"] = CLIENT_CLOSED  # the client hung up before any answer: not a server error
                raise
        finally:
            if admitted:
                self.admission.leave()
            route = path if path.startswith(("/v1/", "/health", "/metrics")) else "other"
            self.metrics.count_request(route, seen["status"])  # type: ignore[arg-type]

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
