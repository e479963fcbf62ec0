"""Domain errors. The store and the rest raise these; the error middleware turns each into
`{"error": message}` with its status."""


class AuditdError(Exception):
    status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidRequest(AuditdError):
    status = 400


class NotFound(AuditdError):
    status = 404


class Conflict(AuditdError):
    status = 409


class Unavailable(AuditdError):
    status = 503


class SchemaVersionError(AuditdError):
    """The database file is from a newer auditd, or is not an auditd database."""


class Unauthorized(AuditdError):
    status = 401
    headers = {"WWW-Authenticate": 'Basic realm="auditd"'}


class Forbidden(AuditdError):
    status = 403


class TooManyRequests(AuditdError):
    """A limit on what one user may do per minute was reached; `retry_after` seconds to wait."""
    status = 429

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.headers = {"Retry-After": str(max(1, int(retry_after + 0.999)))}


class Busy(Unavailable):
    """The server is at a bound (bytes in flight, say) right now: retry shortly."""

    def __init__(self, message: str, retry_after: float = 1):
        super().__init__(message)
        self.headers = {"Retry-After": str(max(1, int(retry_after + 0.999)))}
