"""Every error leaves the server in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.

Exception handlers are registered here, in one place; routes just raise.
"""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from leanserve.engines.base import EngineError
from leanserve.errors import LeanserveError

log = logging.getLogger(__name__)

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error",
          408: "timeout_error", 413: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable",
          504: "timeout_error"}
CLIENT_CLOSED = 499  # nginx's "client closed request": counted in leanserve_requests_total, never sent
requests_log = logging.getLogger("leanserve.requests")


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, _TYPES.get(status, "server_error"), param, code), status_code=status)


def _loc_to_param(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    # pydantic adds the union member's type name ('str', 'list[...]'); a person wants the field path
    parts = [p for p in parts if not (p.startswith(("list[", "function-", "constrained-")) or
                                      p in ("str", "int", "float", "bool"))]
    return ".".join(parts) or None


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    param = _loc_to_param(tuple(first.get("loc", ())))
    if first.get("type") == "json_invalid":
        return error_response(400, f"The request body is not valid JSON: {first.get('msg')}", None, "invalid_json")
    msg = str(first.get("msg", "invalid value"))
    if first.get("type") == "extra_forbidden":  # OpenAI's words for a field it does not know
        msg = "Unrecognized request argument supplied; this server refuses fields it cannot honour"
    message = f"{param}: {msg}" if param else msg
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return error_response(400, message, param, "invalid_value")


async def _leanserve_error(request: Request, exc: LeanserveError) -> JSONResponse:
    return JSONResponse(error_body(exc.message, exc.error_type, exc.param, exc.code), status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


class QueueFull(LeanserveError):
    """--max-queue requests already hold a slot; the client should retry after `retry_after` s."""

    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, limit: int | None, retry_after: int) -> None:
        super().__init__(f"The server is at its limit of {limit} requests in flight (--max-queue); retry after "
                         f"{retry_after} s.", code="queue_full")
        self.headers = {"retry-after": str(retry_after)}


class ClientDisconnected(Exception):
    """The client closed the connection before its answer was ready; its work has been stopped."""

    def __init__(self, route: str, started: float) -> None:
        super().__init__(f"client closed the connection on {route}")
        self.route, self.started = route, started


async def _client_disconnected(request: Request, exc: ClientDisconnected) -> Response:
    """An expected end, not an error: one INFO line, no traceback. The 499 goes to the metrics (the
    middleware counts the status it sees); the transport drops it, since nobody is listening."""
    requests_log.info("%s %s %d client closed the connection after %.0f ms; its work was stopped",
                      request.method, exc.route, CLIENT_CLOSED, (time.perf_counter() - exc.started) * 1000)
    return Response(status_code=CLIENT_CLOSED)


class BodyTooLarge(Exception):
    """Raised while the body streams in (no content-length, or a false one) once it passes the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is larger than this server's limit of {limit} bytes.")
        self.message = str(self)


def _body_parse_message(cause: BaseException | None) -> str:
    """FastAPI says only "There was an error parsing the body"; say which way it was wrong."""
    if isinstance(cause, UnicodeDecodeError):
        return f"The request body is not valid UTF-8 (byte {cause.start}); send JSON encoded as UTF-8."
    if isinstance(cause, RecursionError):
        return "The request body's JSON is nested too deeply."
    return f"The request body could not be parsed as JSON ({type(cause).__name__ if cause else 'unknown error'})."


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        if isinstance(exc.__cause__, BodyTooLarge):  # FastAPI wraps what the body reader raised
            return error_response(413, exc.__cause__.message, None, "request_too_large")
        return error_response(400, _body_parse_message(exc.__cause__), None, "invalid_json")
    return error_response(exc.status_code, str(exc.detail))


async def _engine_error(request: Request, exc: EngineError) -> JSONResponse:
    log.error("engine error: %s", exc)
    return error_response(500, f"The engine failed: {exc}", code="engine_error")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s", request.url.path)
    return error_response(500, f"Internal error ({type(exc).__name__}); the server log has the details.",
                          code="internal_error")


def register_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(LeanserveError, _leanserve_error)  # type: ignore[arg-type]
    app.add_exception_handler(ClientDisconnected, _client_disconnected)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(EngineError, _engine_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
