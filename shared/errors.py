"""The application's error tree: each error knows its HTTP status and machine-readable code."""

from __future__ import annotations


class AppError(Exception):
    """An error a caller can act on; rendered as {"error": {"code", "message"}}."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class BadRequest(AppError):
    status = 400
    code = "bad_request"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"


class Forbidden(AppError):
    status = 403
    code = "forbidden"


class NotFound(AppError):
    status = 404
    code = "not_found"


class MethodNotAllowed(AppError):
    status = 405
    code = "method_not_allowed"


class Conflict(AppError):
    status = 409
    code = "conflict"


class ServiceUnavailable(AppError):
    """A dependency (MySQL, Beanstalk, a vendor) is down: retry later."""

    status = 503
    code = "service_unavailable"


class ListTaken(Conflict):
    """The Unisender list belongs to another account of ours: one list serves one account."""

    code = "list_taken"
