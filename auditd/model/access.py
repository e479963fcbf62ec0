"""Who is calling and what they may see: principals, roles, API keys (CONTRACT.md section 8)."""
import hashlib
import secrets
from dataclasses import dataclass

from .errors import Forbidden, InvalidRequest, NotFound

ROLES = ("user", "producer", "admin")
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user and the namespaces it may see (None: every namespace)."""
    name: str
    role: str
    namespaces: frozenset | None


def principal_for(name: str, role: str, orgs=()) -> Principal:
    """A user sees its own namespace and its organizations'; producers and admins see all."""
    return Principal(name, role, frozenset([name, *orgs]) if role == "user" else None)


def hash_key(key: str) -> str:
    """API keys are 256-bit random strings, so a plain SHA-256 is a sound way to keep them."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """256 random bits in A-Z a-z 0-9 _ -, never starting with '-' (a command line would take
    `--apikey -abc...` for an option)."""
    while True:
        key = secrets.token_urlsafe(32)
        if not key.startswith("-"):
            return key


def key_matches(key: str, stored_hash: str | None) -> bool:
    """Whether `key` hashes to `stored_hash`, in constant time; a missing user (None) costs the
    same comparison and never matches."""
    same = secrets.compare_digest(hash_key(key), stored_hash or "0" * 64)
    return same and stored_hash is not None


def check_role(role: str):
    if role not in ROLE_RANK:
        raise InvalidRequest(f"role must be one of: {', '.join(ROLES)}")


def require_role(principal: Principal, role: str):
    if ROLE_RANK[principal.role] < ROLE_RANK[role]:
        raise Forbidden(f"user '{principal.name}' has role {principal.role}; this needs role "
                        f"{role} or higher")


def visible_namespaces(principal: Principal, namespace: str | None):
    """The namespaces a request may touch: the caller's, narrowed by a namespaced path. A
    namespace the caller may not see does not exist for it (404, not 403)."""
    if namespace is None:
        return principal.namespaces
    if principal.namespaces is not None and namespace not in principal.namespaces:
        raise NotFound(f"No namespace '{namespace}'")
    return frozenset([namespace])


def check_visible(uuid: str, namespace: str | None, namespaces):
    """Raise NotFound unless the action `uuid`, in `namespace` (None: there is no such action), is
    visible to a caller who sees `namespaces` (None: all). An action the caller may not see does
    not exist for it: the answer is the same as for an unknown uuid."""
    if namespace is None or (namespaces is not None and namespace not in namespaces):
        raise NotFound(f"No action with uuid {uuid}")
