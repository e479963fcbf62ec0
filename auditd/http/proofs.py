"""Tamper evidence over HTTP (docs/TRANSPARENCY.md): the latest signed checkpoint, an action's
inclusion proofs, consistency between two tree sizes. Any authenticated principal may ask; a
proof is only given for an action the caller may see."""
import base64

from aiohttp import web

from ..model.access import require_role
from ..model.errors import InvalidRequest, Unavailable
from ..schemas import ascii_int
from ..store.interface import TREE_MISSING
from .appkeys import CHECKPOINTER, PRINCIPAL, STORE
from .requests import namespaces, single_query
from .responses import json_response


def _checkpointer(request: web.Request):
    checkpointer = request.app.get(CHECKPOINTER)
    if checkpointer is None:
        raise Unavailable(TREE_MISSING)
    return checkpointer


def _size(params: dict, name: str) -> int | None:
    if name not in params:
        return None
    value = ascii_int(params[name])
    if value is None:
        raise InvalidRequest(f"{name} must be a tree size: a whole number in digits 0-9")
    return value


async def checkpoint(request: web.Request) -> web.Response:
    single_query(request, allowed=())
    return json_response(await _checkpointer(request).latest())


async def sign_checkpoint(request: web.Request) -> web.Response:
    """POST: sign a checkpoint of the tree as it is now (admin)."""
    require_role(request[PRINCIPAL], "admin")
    single_query(request, allowed=())
    return json_response(await _checkpointer(request).sign(), 201)


async def proof(request: web.Request) -> web.Response:
    """Every leaf of the action against the latest checkpoint (signed now if it does not cover
    the action yet), or against an earlier checkpoint's size (?tree_size=N)."""
    params = single_query(request, allowed={"tree_size"})
    uuid, visible = request.match_info["uuid"], namespaces(request)
    store = request.app[STORE]
    size = _size(params, "tree_size")
    if size is None:
        head, _ = await store.tree_head()
        size = (await _checkpointer(request).latest(covering=head))["tree_size"]
    answer = await store.proof(uuid, visible, size)
    for leaf in answer["leaves"]:
        leaf["leaf"] = base64.b64encode(leaf["leaf"]).decode() if leaf["leaf"] else None
    return json_response(answer)


async def consistency(request: web.Request) -> web.Response:
    params = single_query(request, allowed={"first", "second"})
    first, second = _size(params, "first"), _size(params, "second")
    if first is None or second is None:
        raise InvalidRequest("give first and second: the two tree sizes to prove consistent")
    path = await request.app[STORE].consistency(first, second)
    return json_response({"first": first, "second": second, "consistency_path": path})
