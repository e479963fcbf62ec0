"""The configuration's one error."""
from ..model.errors import AuditdError


class ConfigError(AuditdError):
    """A setting is unknown or its value is not accepted: the start stops."""
