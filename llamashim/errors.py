"""Error values (pure): what went wrong and its HTTP status; each dialect words it in its own shape."""

from __future__ import annotations

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "unavailable_error",
    504: "timeout_error",
}


class ShimError(Exception):
    """An error answered to the client in the dialect's shape, with an HTTP status."""

    def __init__(self, status: int, message: str, type: str | None = None, code: int | str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or error_type(status)
        self.code = code if code is not None else status


class BadRequest(ShimError):
    def __init__(self, message: str):
        super().__init__(400, message)


def error_type(status: int) -> str:
    if status in _TYPES:
        return _TYPES[status]
    return "server_error" if status >= 500 else "invalid_request_error"
