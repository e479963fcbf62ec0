"""Who is calling, and what they may do and see."""
import base64
import binascii

from .errors import Forbidden, NotFound, Unauthorized
from .store import Principal, Store

ROLE_RANK = {"user": 0, "producer": 1, "admin": 2}


def credentials_from_header(header: str) -> tuple[str, str] | None:
    """(user, key) from `Basic base64(user:key)` or the older `ApiKey user:key`."""
    scheme, _, value = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    elif scheme == "apikey":
        decoded = value.strip()
    else:
        return None
    user, sep, key = decoded.partition(":")
    return (user, key) if sep and user and key else None


def authenticate(store: Store, header: str | None, query_user: str | None = None,
                 query_token: str | None = None) -> Principal:
    credentials = credentials_from_header(header) if header else None
    if credentials is None and query_user and query_token:
        credentials = (query_user, query_token)
    if credentials is None:
        raise Unauthorized("Authentication required: send 'Authorization: Basic "
                           "base64(user:apikey)' (or 'ApiKey user:apikey')")
    principal = store.principal(*credentials)
    if principal is None:
        raise Unauthorized("Invalid credentials: unknown user or wrong API key")
    return principal


def require_role(principal: Principal, role: str):
    if ROLE_RANK[principal.role] < ROLE_RANK[role]:
        raise Forbidden(f"user '{principal.name}' has role {principal.role}; this needs role "
                        f"{role} or higher")


def visible_namespaces(principal: Principal, namespace: str | None):
    """The namespaces a request may touch: the caller's, narrowed by a namespaced path."""
    if namespace is None:
        return principal.namespaces
    if principal.namespaces is not None and namespace not in principal.namespaces:
        raise NotFound(f"No namespace '{namespace}'")
    return frozenset([namespace])
