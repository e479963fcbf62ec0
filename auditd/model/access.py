"""Who is calling and what they may see: principals, roles, API keys (CONTRACT.md section 8)."""
import hashlib
import re
import secrets
from dataclasses import dataclass

from .errors import Forbidden, InvalidRequest, NotFound

ROLES = ("user", "producer", "admin")
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}

# A user's or organization's name is a namespace too: it must log in (Basic auth splits at the
# first ':'), and fit one path segment of /api/audit/v1/{namespace}/... as it is (no '/', nothing
# that needs percent-encoding). 'action' would make /api/audit/v1/action/action/ ambiguous.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
NAME_RULE = ("1 to 64 characters of A-Z a-z 0-9 . _ @ -, starting with a letter or digit "
             "(it is the namespace in /api/audit/v1/NAME/action/)")
RESERVED_NAMES = frozenset({"action"})


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


def name_problem(name) -> str | None:
    """What is wrong with `name` as a user's or organization's name, or None."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        return f"{name!r} is not a valid name: use {NAME_RULE}"
    if name in RESERVED_NAMES:
        return f"{name!r} is reserved (a path segment of the API): choose another name"
    return None


def check_name(name, kind: str = "user"):
    """InvalidRequest when `name` cannot be a user's or organization's name (`kind`)."""
    problem = name_problem(name)
    if problem is not None:
        raise InvalidRequest(f"{kind} name {problem}")


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
