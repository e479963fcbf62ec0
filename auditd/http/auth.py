"""Credentials on a request: `Authorization: Basic` or the older `ApiKey` form, or the streams'
`?user=&token=` (CONTRACT.md sections 7 and 8)."""
import base64
import binascii

from ..model.access import Principal
from ..model.errors import Unauthorized


def credentials_from_header(header: str) -> tuple[str, str] | None:
    """(user, key) from `Basic base64(user:key)` or the older `ApiKey user:key`."""
    scheme, _, value = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):   # not base64, not ASCII, not UTF-8 inside
            return None
    elif scheme == "apikey":
        decoded = value.strip()
    else:
        return None
    user, sep, key = decoded.partition(":")
    if not (sep and user and key) or not _is_text(decoded):
        return None
    return user, key


def _is_text(value: str) -> bool:
    """Valid Unicode text: no undecodable byte (a lone surrogate after surrogateescape)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def credentials_of(header: str | None, query_user: str | None = None,
                   query_token: str | None = None) -> tuple[str, str]:
    """(user, key) from the header, else from the streams' query; Unauthorized without them."""
    credentials = credentials_from_header(header) if header else None
    if credentials is None and query_user and query_token:
        credentials = (query_user, query_token)
    if credentials is None:
        raise Unauthorized("Authentication required: send 'Authorization: Basic "
                           "base64(user:apikey)' (or 'ApiKey user:apikey')")
    return credentials


async def authenticate(store, header: str | None, query_user: str | None = None,
                       query_token: str | None = None) -> Principal:
    return await check_credentials(store, credentials_of(header, query_user, query_token))


async def check_credentials(store, credentials: tuple[str, str]) -> Principal:
    principal = await store.authenticate(*credentials)
    if principal is None:
        raise Unauthorized("Invalid credentials: unknown user or wrong API key")
    return principal
