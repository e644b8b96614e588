"""ASGI middleware: body-size limit (413), API-key check (401) and per-route request counting.

Pure ASGI (not BaseHTTPMiddleware) so streamed responses and client disconnects pass straight through.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from leanserve.server.errors import error_body
from leanserve.server.metrics import ServerMetrics

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = {"/health"}


async def _send_error(send: Send, status: int, type_: str, message: str, code: str) -> None:
    body = json.dumps(error_body(message, type_, None, code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


class GuardMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, api_key: str | None, metrics_need_key: bool,
                 metrics: ServerMetrics) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.api_key = api_key.encode() if api_key else None
        self.open_paths = OPEN_PATHS | (set() if metrics_need_key else {"/metrics"})
        self.metrics = metrics

    def _authorized(self, scope: Scope) -> bool:
        if self.api_key is None or scope["path"] in self.open_paths:
            return True
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"")
        scheme, _, token = auth.partition(b" ")
        # constant-time comparison: a timing side channel must not reveal how much of a key matched
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.api_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status_seen = {"status": 500}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen["status"] = message["status"]
            await send(message)

        try:
            if not self._authorized(scope):
                await _send_error(counting_send, 401, "authentication_error",
                                  "Missing or invalid API key. Pass it as 'Authorization: Bearer <key>'.",
                                  "invalid_api_key")
                return
            headers = dict(scope.get("headers") or [])
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                await self._too_large(counting_send)
                return
            received = 0

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body:
                        raise _BodyTooLarge
                return message

            try:
                await self.app(scope, limited_receive, counting_send)
            except _BodyTooLarge:
                await self._too_large(counting_send)
        finally:
            route = scope["path"] if scope["path"].startswith(("/v1/", "/health", "/metrics")) else "other"
            self.metrics.count_request(route, status_seen["status"])

    async def _too_large(self, send: Send) -> None:
        await _send_error(send, 413, "invalid_request_error",
                          f"The request body is larger than this server's limit of {self.max_body} bytes.",
                          "request_too_large")
