"""The OpenAPI schema as the server really answers: every error a route can return, in OpenAI's shape.

FastAPI documents only 200 and 422; leanserve never sends 422 (validation errors are 400, as OpenAI's
are) but does send 400/401/404/413/429/503/504, and streams `text/event-stream`. Clients, and the
fuzz tests that hold the server to this schema, need the schema to say so.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from leanserve.server.middleware import GENERATION_PATHS

ERRORS = {
    400: "Invalid request (bad JSON, wrong types, values out of range, prompt longer than the context)",
    401: "Missing or invalid API key",
    404: "Unknown model or route",
    408: "The request body did not arrive within --body-timeout",
    413: "Request body larger than --max-body-bytes",
    429: "More requests in flight than --max-queue; see the Retry-After header",
    503: "The model is loading, failed to load, or the server is draining for shutdown",
    504: "The request ran longer than --request-timeout",
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type", "param", "code"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}},
    }},
}


# with "stream": true: server-sent events, each `data:` a JSON chunk (or an error object), then [DONE]
SSE_EVENT: dict[str, Any] = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}


def build_schema(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    schema.setdefault("components", {}).setdefault("schemas", {})["ErrorResponse"] = ERROR_SCHEMA
    for path, item in schema.get("paths", {}).items():
        for op in item.values():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            codes = [401, 503] if path == "/health" else list(ERRORS)  # /health: 503 has its own body
            if path == "/health":
                responses["503"] = {"description": "Not ready: loading, failed or draining",
                                    "content": {"application/json": {"schema": {"type": "object"}}}}
                continue
            for code in codes:
                responses.setdefault(str(code), _error_response(ERRORS[code]))
            if path in GENERATION_PATHS:
                ok = responses.setdefault("200", {"description": "Successful Response"})
                ok.setdefault("content", {}).setdefault("text/event-stream", {"schema": SSE_EVENT})
    return schema


def install_openapi(app: FastAPI) -> None:
    """Serve `build_schema` at /openapi.json (built once, on first request)."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_schema(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
