"""Every error the registry reports, each with a stable code and HTTP status.

The tree::

    RegistryError                      500 SERVER_ERROR
    ├── InvalidJSON                    400 INVALID_JSON
    ├── Unauthorized                   401
    │   ├── TokenMissing               401 TOKEN_MISSING
    │   ├── TokenInvalid               401 TOKEN_INVALID
    │   ├── TokenExpired               401 TOKEN_EXPIRED
    │   └── InvalidCredentials         401 INVALID_CREDENTIALS
    ├── Forbidden                      403
    │   ├── ProjectPermissionRequired  403 PROJECT_PERMISSION_REQUIRED
    │   ├── AdminRequired              403 ADMIN_REQUIRED
    │   └── SameUserRequired           403 SAME_USER_REQUIRED
    ├── NotFound                       404 NOT_FOUND
    ├── MethodNotAllowed               405 METHOD_NOT_ALLOWED
    ├── Conflict                       409 CONFLICT
    │   └── IdempotencyKeyInFlight     409 IDEMPOTENCY_KEY_IN_FLIGHT
    ├── PreconditionFailed             412 PRECONDITION_FAILED
    ├── PayloadTooLarge                413 PAYLOAD_TOO_LARGE
    ├── InvalidPayload                 422 INVALID_PAYLOAD
    │   └── IdempotencyKeyReused       422 IDEMPOTENCY_KEY_REUSED
    ├── TooManyRequests                429 TOO_MANY_REQUESTS
    └── DatabaseUnavailable            503 DATABASE_UNAVAILABLE

The services raise these; one middleware turns them into the JSON envelope
``{"code": ..., "message": ...}``.
"""

from __future__ import annotations


class RegistryError(Exception):
    """Base of every registry error; on its own it means a bug."""

    status = 500
    code = "SERVER_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def envelope(self) -> dict[str, str]:
        """The JSON error body."""
        return {"code": self.code, "message": self.message}


class InvalidJSON(RegistryError):
    status = 400
    code = "INVALID_JSON"


class Unauthorized(RegistryError):
    status = 401
    code = "TOKEN_INVALID"


class TokenMissing(Unauthorized):
    code = "TOKEN_MISSING"


class TokenInvalid(Unauthorized):
    code = "TOKEN_INVALID"


class TokenExpired(Unauthorized):
    code = "TOKEN_EXPIRED"


class InvalidCredentials(Unauthorized):
    code = "INVALID_CREDENTIALS"


class Forbidden(RegistryError):
    status = 403
    code = "FORBIDDEN"


class ProjectPermissionRequired(Forbidden):
    code = "PROJECT_PERMISSION_REQUIRED"


class AdminRequired(Forbidden):
    code = "ADMIN_REQUIRED"


class SameUserRequired(Forbidden):
    code = "SAME_USER_REQUIRED"


class NotFound(RegistryError):
    status = 404
    code = "NOT_FOUND"


class MethodNotAllowed(RegistryError):
    status = 405
    code = "METHOD_NOT_ALLOWED"

    def __init__(self, message: str, allowed: frozenset[str]) -> None:
        super().__init__(message)
        self.allowed = allowed


class Conflict(RegistryError):
    status = 409
    code = "CONFLICT"


class IdempotencyKeyInFlight(Conflict):
    """The first request with this Idempotency-Key has not finished yet."""

    code = "IDEMPOTENCY_KEY_IN_FLIGHT"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PreconditionFailed(RegistryError):
    """If-Match named a revision the record no longer has; ``etag`` is the
    current one."""

    status = 412
    code = "PRECONDITION_FAILED"

    def __init__(self, message: str, etag: str) -> None:
        super().__init__(message)
        self.etag = etag


class PayloadTooLarge(RegistryError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"


class InvalidPayload(RegistryError):
    status = 422
    code = "INVALID_PAYLOAD"


class IdempotencyKeyReused(InvalidPayload):
    """An Idempotency-Key already answered a different request."""

    code = "IDEMPOTENCY_KEY_REUSED"


class TooManyRequests(RegistryError):
    status = 429
    code = "TOO_MANY_REQUESTS"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DatabaseUnavailable(RegistryError):
    status = 503
    code = "DATABASE_UNAVAILABLE"
