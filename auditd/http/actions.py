"""The REST handlers of the Actions API and the producer API (CONTRACT.md sections 4 to 6).
Thin: parse, ask the store, answer."""
import functools
import json
from json.encoder import encode_basestring_ascii

from aiohttp import web
from marshmallow import ValidationError

from ..model import dates
from ..model.access import require_role
from ..model.errors import InvalidRequest
from ..model.query import ListQuery, format_cursor
from ..model.uris import action_uri
from ..schemas import LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT, LIST_QUERY_SCHEMA, describe_errors
from .appkeys import LIMITS, LOCATOR, PRINCIPAL, STORE
from . import bodies
from .requests import (author, caller, json_body, namespaces, parsed_body, single_query,
                       small_json_body)
from .responses import ACTION_URI_HEADER, action_response, json_text


# ---------------------------------------------------------------------------- reading

def _parse_list_query(params: dict) -> tuple:
    """(filters, limit, offset, newest_first, cursor) from the query's parameters.
    `_list_query` remembers the answer per raw query string."""
    try:
        filters = LIST_QUERY_SCHEMA.load(params)
    except ValidationError as err:
        raise InvalidRequest("invalid query: " + _describe(err, "parameter")) from None
    limit = filters.pop("limit", LIST_DEFAULT_LIMIT)
    limit = LIST_MAX_LIMIT if limit == 0 else min(limit, LIST_MAX_LIMIT)
    offset = filters.pop("offset", 0)
    newest_first = filters.pop("order_by", "-start_date") == "-start_date"
    return filters, limit, offset, newest_first, filters.pop("cursor", None)


_PAGING_PARAMS = ("limit", "offset", "cursor")
_LIST_QUERIES: dict[str, tuple] = {}


def _list_query(request: web.Request) -> tuple:
    """`_parse_list_query`'s answer plus the filters to keep in next/previous links, remembered
    per raw query string: a client polling a list sends the same one again and again."""
    raw = request.rel_url.raw_query_string
    parsed = _LIST_QUERIES.get(raw)
    if parsed is None:
        params = single_query(request)   # raises for a bad query: nothing is remembered
        # next/previous keep every filter exactly as the client wrote it
        kept = "".join(part + "&" for part in request.query_string.split("&")
                       if part and part.partition("=")[0] not in _PAGING_PARAMS)
        parsed = (*_parse_list_query(params), kept)
        if any(dates.is_relative(value) for value in params.values()):
            return parsed   # '?start_date__gte=2h' means something else a second from now
        if len(_LIST_QUERIES) >= 1024:
            _LIST_QUERIES.clear()
        _LIST_QUERIES[raw] = parsed
    return parsed


async def list_actions(request: web.Request) -> web.Response:
    filters, limit, offset, newest_first, cursor, kept = _list_query(request)
    query = ListQuery(namespaces(request), limit, offset, newest_first, dict(filters), cursor)
    page = await request.app[STORE].list_actions(query)
    path = request.path if request.path.endswith("/") else request.path + "/"

    def link(at, position=None):
        extra = f"&cursor={format_cursor(position)}" if position else ""
        return f"{path}?{kept}limit={limit}&offset={at}{extra}"

    has_next = offset + limit < page.total and page.size == limit
    # next carries the last row's position, so following it never rescans skipped rows
    next_link = _json_link(link(offset + limit, page.last) if has_next else None)
    previous = _json_link(link(max(0, offset - limit)) if offset > 0 else None)
    # what json.dumps(meta) writes, keys in the same order, without its encoder's set-up
    meta = (f'{{"meta": {{"limit": {limit}, "next": {next_link}, "offset": {offset}, '
            f'"previous": {previous}, "total_count": {page.total}}}, "objects": [')
    body = b"".join((meta.encode(), page.json_items(), b"]}"))
    return web.Response(body=body, content_type="application/json", charset="utf-8")


def _json_link(link: str | None) -> str:
    return "null" if link is None else encode_basestring_ascii(link)


async def get_action(request: web.Request) -> web.Response:
    single_query(request, allowed=())
    doc = await request.app[STORE].get_action_doc(request.match_info["uuid"],
                                                       namespaces(request))
    return json_text(doc)


# ---------------------------------------------------------------------------- user operations

async def cancel_action(request: web.Request) -> web.Response:
    single_query(request, allowed=())
    request.app[LIMITS].cancels.take(request[PRINCIPAL].name)
    action = await request.app[STORE].cancel(request.match_info["uuid"], namespaces(request))
    return action_response(action, 202)


async def retry_action(request: web.Request) -> web.Response:
    single_query(request, allowed=())
    request.app[LIMITS].retries.take(request[PRINCIPAL].name)
    action = await request.app[STORE].retry(request.match_info["uuid"], namespaces(request),
                                                 caller(request))
    return action_response(action, 202)


# ---------------------------------------------------------------------------- producer API

async def record_action(request: web.Request) -> web.Response:
    require_role(request[PRINCIPAL], "producer")
    single_query(request, allowed=())
    made = (author(request), request.match_info.get("namespace"), request.app[LOCATOR])
    raw = await small_json_body(request)
    if raw is not None:   # parsed and checked where the store writes (the writer process)
        record = functools.partial(bodies.record_from_body, raw, *made)
    else:                 # a big body: parsed in the parser process, the record made here
        record = bodies.record_from_fields(await json_body(request, bodies.record_fields), *made)
    action = await request.app[STORE].record_action(record)
    return action_response(action, 201)


async def change_state(request: web.Request) -> web.Response:
    require_role(request[PRINCIPAL], "producer")
    single_query(request, allowed=())
    state = await json_body(request, bodies.new_state)
    action = await request.app[STORE].change_state(request.match_info["uuid"], state,
                                                        namespaces(request))
    return action_response(action, 200)


async def append_logs(request: web.Request) -> web.Response:
    require_role(request[PRINCIPAL], "producer")
    single_query(request, allowed=())
    now = dates.now()
    if request.content_type == "text/plain":
        lines = await parsed_body(request, bodies.text_log_lines, now)
    else:
        lines = await json_body(request, bodies.json_log_lines, now)
    count = await request.app[STORE].append_logs(request.match_info["uuid"], lines,
                                                      namespaces(request))
    return json_text(json.dumps({"appended": count}), 201,
                     {ACTION_URI_HEADER: action_uri(request.match_info["uuid"].lower())})


def _describe(err: ValidationError, noun: str = "key") -> str:
    return describe_errors(err.messages, noun)
