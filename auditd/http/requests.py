"""Reading a request: its query string, its body, and who is asking from where."""
from urllib.parse import unquote, unquote_to_bytes

from aiohttp import web

from ..model.access import visible_namespaces
from ..model.errors import InvalidRequest
from .appkeys import BODY_PARSER, CONFIG, LOCATOR, PRINCIPAL

SMALL_BODY = 64 * 1024   # a body this small, arrived whole, is taken in one piece


def single_query(request: web.Request, allowed=None) -> dict:
    """The query string as a plain dict; a parameter given twice, or a value that is not valid
    UTF-8 once percent-decoded, is refused."""
    raw = request.rel_url.raw_query_string
    if "%" in raw:
        _check_encoding(raw)
    params = {}
    for name in request.query.keys():
        values = request.query.getall(name)
        if len(values) > 1:
            raise InvalidRequest(f"query parameter '{name}' is given {len(values)} times; "
                                 "give it once")
        if allowed is not None and name not in allowed:
            raise InvalidRequest(f"unknown query parameter '{name}'; accepted: "
                                 + ", ".join(sorted(allowed)))
        params[name] = values[0]
    return params


async def json_body(request: web.Request, parser, *args):
    """The body, sent as JSON, through `parser` (one of `bodies`): in the parser process when
    it is big."""
    _check_json(request)
    return await parsed_body(request, parser, *args)


async def small_json_body(request: web.Request) -> bytes | None:
    """The bytes of a small JSON body that arrived whole, for a parser to run elsewhere
    (`Store.record_action` runs it where it writes); None for a big one or one still arriving
    (then `json_body` reads it, and parses a big one in the parser process)."""
    _check_json(request)
    content = request.content
    if content.is_eof() and content.total_bytes <= SMALL_BODY:
        chunks, _ = await body_chunks(request)   # what came whole, checked against the limit
        return b"".join(chunks)
    return None


async def parsed_body(request: web.Request, parser, *args):
    """`parser(body, *args)` (one of `bodies`), in the parser process when the body is big."""
    chunks, size = await body_chunks(request)
    return await request.app[BODY_PARSER].parse(parser, chunks, size, *args)


def _check_json(request: web.Request):
    if request.content_type not in ("application/json", "application/octet-stream", ""):
        raise web.HTTPUnsupportedMediaType(
            text=f"Content-Type {request.content_type} is not accepted: send application/json")


async def body_chunks(request: web.Request) -> tuple[list[bytes], int]:
    """The body as the chunks it arrives in (joining 8 MB would hold the GIL for a while), and
    its size; 413 past the limit."""
    limit, chunks, size = request.app[CONFIG].max_body_bytes, [], 0
    content = request.content
    if content.is_eof() and content.total_bytes <= SMALL_BODY:
        data = content.read_nowait()     # a small body that came whole (a record's): no awaiting
        if len(data) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
        return ([data] if data else []), len(data)
    async for chunk in content.iter_any():
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
        chunks.append(chunk)
    return chunks, size


def _check_encoding(raw: str):
    for part in raw.split("&"):
        name, _, value = part.partition("=")
        for what, text in (("name", name), ("value", value)):
            try:
                unquote_to_bytes(text.replace("+", " ")).decode("utf-8")
            except UnicodeDecodeError:
                shown = unquote(name, errors="replace")
                raise InvalidRequest(f"query parameter {what} '{shown}' is not valid UTF-8 once "
                                     "percent-decoded: encode text as UTF-8") from None


def namespaces(request: web.Request):
    """The namespaces this request may touch: the caller's, narrowed by a namespaced path."""
    return visible_namespaces(request[PRINCIPAL], request.match_info.get("namespace"))


def author(request: web.Request) -> dict:
    """Who calls: user, ip and user agent (what a recorded action's body may leave out)."""
    return {"user": request[PRINCIPAL].name, "ip": request.remote or "",
            "user_agent": request.headers.get("User-Agent", "")}


def caller(request: web.Request) -> dict:
    """The caller as the author of an action it causes (a retry): `author`, and the location
    of its ip."""
    found = author(request)
    found["location"] = request.app[LOCATOR].locate(found["ip"])
    return found
