"""Typed errors raised inside leanserve.

The server translates each into OpenAI's error shape in one place (`server/errors.py`); nothing
below the server knows about HTTP, so every error carries only what a caller needs to act on it.
"""

from __future__ import annotations


class LeanserveError(Exception):
    """Base class: an error a user can act on, with an OpenAI-style type and the offending field."""

    status_code: int = 400
    error_type: str = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequest(LeanserveError):
    """The request is well-formed JSON but asks for something the server cannot do."""


class ContextLengthExceeded(InvalidRequest):
    """Prompt plus requested completion does not fit the model's context window."""

    def __init__(self, message: str, *, param: str | None = "messages") -> None:
        super().__init__(message, param=param, code="context_length_exceeded")


class ModelNotFound(LeanserveError):
    status_code = 404
    error_type = "not_found_error"

    def __init__(self, message: str, *, param: str | None = "model") -> None:
        super().__init__(message, param=param, code="model_not_found")


class AuthenticationFailed(LeanserveError):
    status_code = 401
    error_type = "authentication_error"

    def __init__(self, message: str = "Missing or invalid API key. Pass it as 'Authorization: Bearer <key>'.") -> None:
        super().__init__(message, code="invalid_api_key")


class NotReady(LeanserveError):
    status_code = 503
    error_type = "service_unavailable"

    def __init__(self, message: str = "The model is still loading; retry shortly.") -> None:
        super().__init__(message, code="not_ready")


class ProfileError(LeanserveError):
    """A profile is unknown, malformed, or its artifact is missing; raised at startup, not per request."""

    status_code = 404
    error_type = "not_found_error"


class EngineUnavailable(LeanserveError):
    """No installed engine can serve the chosen profile on this machine."""

    status_code = 500
    error_type = "server_error"
