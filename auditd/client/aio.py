"""AsyncClient: the whole auditd API (CONTRACT.md) from asyncio, on aiohttp.

Every method returns what the server sent, decoded (actions are plain dicts with the keys of
CONTRACT.md section 2). A failed call raises `ApiError(status, message)` with the server's
`{"error": ...}` text; `status` is None when no HTTP answer came (refused connection, timeout).
"""
import asyncio
import base64
import datetime
import json
import os
import re
import socket
from urllib.parse import quote

import aiohttp
from yarl import URL

from .. import __version__

DEFAULT_URL = "http://127.0.0.1:8080"     # where `auditd serve` listens by default
USER_AGENT = f"auditd-client/{__version__}"
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", re.I)


class ApiError(Exception):
    """A call failed. `status` is the HTTP status (None when the server gave no answer);
    `message` is the server's `{"error": ...}` text, or what went wrong on the way."""

    def __init__(self, status: int | None, message: str):
        super().__init__(f"{status}: {message}" if status else message)
        self.status, self.message = status, message


class StreamClosed(ApiError):
    """A WebSocket stream ended with a close code other than 1000 (normal end): 1013 for a
    reader that did not keep up, 1008 for lost access, 1001 for a server shutting down, 1006
    for a connection lost without a close."""

    def __init__(self, code: int | None, reason: str):
        super().__init__(None, f"stream closed with code {code}" + (f": {reason}" if reason else ""))
        self.code, self.reason = code, reason


def settings(url=None, user=None, key=None, stream_url=None, environ=None) -> dict:
    """The server's address and the credentials: the arguments, else the variables the
    docker-cloud CLI reads (DOCKERCLOUD_REST_HOST, DOCKERCLOUD_STREAM_HOST, DOCKERCLOUD_USER,
    DOCKERCLOUD_APIKEY). Raises ValueError naming what is missing or malformed."""
    env = os.environ if environ is None else environ
    rest = url or env.get("DOCKERCLOUD_REST_HOST") or DEFAULT_URL
    if stream_url is None and not url:
        stream_url = env.get("DOCKERCLOUD_STREAM_HOST") or None
    stream = stream_url or re.sub(r"^http", "ws", rest, count=1)
    for name, value, schemes in (("URL", rest, ("http", "https")),
                                 ("WebSocket URL", stream, ("ws", "wss"))):
        parsed = URL(value)
        if parsed.scheme not in schemes or not parsed.host:
            raise ValueError(f"the server's {name} must look like {schemes[0]}://HOST:PORT, "
                             f"not {value!r}")
    user = user or env.get("DOCKERCLOUD_USER")
    key = key or env.get("DOCKERCLOUD_APIKEY")
    if not user or not key:
        raise ValueError("no credentials: pass a user and an API key (--user/--key), or set "
                         "DOCKERCLOUD_USER and DOCKERCLOUD_APIKEY")
    return {"url": rest.rstrip("/"), "stream_url": stream.rstrip("/"), "user": user, "key": key}


def query_value(name: str, value) -> str:
    """A filter value as the API takes it: booleans as true/false, datetimes as ISO 8601 (a
    naive one is taken as UTC, as the server does), the rest as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return value.isoformat(timespec="seconds")
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, (str, int)):
        return str(value)
    raise TypeError(f"filter {name}: expected a string, number, bool or date, not {value!r}")


def _query(params: dict) -> dict:
    return {k: query_value(k, v) for k, v in params.items() if v is not None}


class AsyncClient:
    """`async with AsyncClient(url, user, key) as api: page = await api.list(state="Failed")`.

    Arguments left out come from the DOCKERCLOUD_* variables; `namespace` (optional) sends every
    call to the namespaced paths (`/api/audit/v1/{namespace}/...`)."""

    def __init__(self, url=None, user=None, key=None, *, stream_url=None, namespace=None,
                 timeout: float = 30):
        found = settings(url, user, key, stream_url)
        self.url, self.stream_url, self.user = found["url"], found["stream_url"], found["user"]
        token = base64.b64encode(f"{self.user}:{found['key']}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "User-Agent": USER_AGENT}
        self._root = "/api/audit/v1" + (f"/{quote(namespace, safe='')}" if namespace else "")
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def close(self):
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers)
        return self._session

    # ------------------------------------------------------------------------ plumbing

    async def _call(self, method: str, path: str, *, params=None, json_body=None):
        """One REST call; `path` starts with /api/. Returns the decoded JSON body."""
        url = self.url + path
        try:
            async with self._http().request(
                    method, url, params=params, json=json_body,
                    timeout=aiohttp.ClientTimeout(total=self._timeout)) as resp:
                text = await resp.text()
                status = resp.status
        except aiohttp.ClientConnectionError as err:
            raise ApiError(None, f"cannot reach the server at {self.url}: {_reason(err)}") from None
        except asyncio.TimeoutError:
            raise ApiError(None, f"no answer from {self.url} within {self._timeout:g} s") from None
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if status >= 400:
            if isinstance(body, dict) and isinstance(body.get("error"), str):
                raise ApiError(status, body["error"])
            raise ApiError(status, f"{method} {url} answered {status}: {text[:200]!r}")
        if body is None:
            raise ApiError(status, f"{url} did not answer JSON: is it an auditd server? "
                                   f"{text[:200]!r}")
        return body

    def _action_path(self, uuid: str, tail: str = "") -> str:
        if not uuid or "/" in uuid:
            raise ValueError(f"not an action uuid: {uuid!r}")
        return f"{self._root}/action/{quote(uuid, safe='')}/{tail}"

    # ------------------------------------------------------------------------ reading

    async def list(self, *, limit: int | None = None, offset: int | None = None,
                   **filters) -> dict:
        """One page: `{"meta": {...}, "objects": [...]}`. Filters are those of CONTRACT.md
        section 4 as keyword arguments: uuid, uuid__startswith, state, start_date__gte,
        start_date__lte, end_date__gte, end_date__lte, object, include_related, action, user,
        is_user_action, order_by."""
        params = _query(dict(filters, limit=limit, offset=offset))
        return await self._call("GET", f"{self._root}/action/", params=params)

    async def pages(self, *, limit: int | None = None, **filters):
        """Every page of a listing, following `meta.next` until there is none."""
        page = await self.list(limit=limit, **filters)
        while True:
            yield page
            following = page["meta"].get("next")
            if not following:
                return
            if not following.startswith("/api/"):
                raise ApiError(None, f"unexpected meta.next from the server: {following!r}")
            page = await self._call("GET", following)

    async def actions(self, *, limit: int | None = None, **filters):
        """Every action of a listing, newest first (unless order_by says otherwise), page by
        page (`limit` is the page size)."""
        async for page in self.pages(limit=limit, **filters):
            for action in page["objects"]:
                yield action

    async def get(self, uuid: str) -> dict:
        return await self._call("GET", self._action_path(uuid))

    async def resolve(self, identifier: str) -> str:
        """The full uuid of the one action whose uuid starts with `identifier` (a full uuid is
        returned as is). ApiError 404 when none matches, 409 when several do."""
        identifier = identifier.strip().lower()
        if not identifier:
            raise ValueError("an action id cannot be empty")
        if UUID4.fullmatch(identifier):
            return identifier
        if not re.fullmatch(r"[0-9a-f-]+", identifier):
            raise ApiError(404, f"no action has an id starting with '{identifier}': ids are "
                                "hex digits and '-'")
        page = await self.list(uuid__startswith=identifier, limit=2)
        found = [a["uuid"] for a in page["objects"]]
        if not found:
            raise ApiError(404, f"no action has an id starting with '{identifier}'")
        if len(found) > 1:
            raise ApiError(409, f"more than one action has an id starting with '{identifier}': "
                                "give more characters or the full uuid")
        return found[0]

    # ------------------------------------------------------------------------ user operations

    async def cancel(self, uuid: str) -> dict:
        """Cancel: the updated action (Pending becomes Canceled, In progress Canceling)."""
        return await self._call("POST", self._action_path(uuid, "cancel/"))

    async def retry(self, uuid: str) -> dict:
        """Retry: the NEW action the server recorded (the original is unchanged)."""
        return await self._call("POST", self._action_path(uuid, "retry/"))

    # ------------------------------------------------------------------------ producer API

    async def record(self, **fields) -> dict:
        """Record an action (producer or admin): `record(action="Service Create", object=...,
        parents=[...], state="In progress", ...)`; the fields of CONTRACT.md section 6."""
        return await self._call("POST", f"{self._root}/action/", json_body=fields)

    async def set_state(self, uuid: str, state: str) -> dict:
        return await self._call("PATCH", self._action_path(uuid), json_body={"state": state})

    async def append_logs(self, uuid: str, lines) -> int:
        """Append log lines (strings, or dicts with log/timestamp/streamType); returns how many
        the server stored."""
        if isinstance(lines, str):
            raise TypeError("lines must be a list of strings or dicts, not one string")
        body = await self._call("POST", self._action_path(uuid, "logs/"), json_body=list(lines))
        return body["appended"]

    # ------------------------------------------------------------------------ streams

    async def follow_logs(self, uuid: str, tail: int | str | None = None, follow: bool = True):
        """The logs stream's messages (`{"type": "log", "log": ..., "timestamp": ...}`): the
        last `tail` lines (server default 300; "all" for every line), then, following, each new
        line until the action ends. Ends when the server closes normally."""
        params = _query({"tail": tail, "follow": follow})
        async for message in self._stream(self._action_path(uuid, "logs/"), params):
            yield message

    async def events(self, *, type: str | None = None, object: str | None = None,  # noqa: A002
                     parent=None):
        """The events stream's messages, as sent: first `{"type": "auth", "user": ...}` (the
        subscription is live from then on), then one `{"type": "action", ...}` per action
        recorded or changed. `parent` may be one URI or a list (any of them matches)."""
        if isinstance(parent, (list, tuple)):
            parent = ",".join(parent)
        params = _query({"type": type, "object": object, "parents": parent})
        async for message in self._stream(f"{self._root}/events/", params):
            yield message

    async def _stream(self, path: str, params: dict):
        url = self.stream_url + path
        try:
            ws = await self._http().ws_connect(url, params=params, autoping=True,
                                               timeout=aiohttp.ClientWSTimeout(ws_close=5))
        except aiohttp.WSServerHandshakeError as err:
            raise await self._handshake_error(path, params, err) from None
        except aiohttp.ClientConnectionError as err:
            raise ApiError(None, f"cannot reach the server at {self.stream_url}: "
                                 f"{_reason(err)}") from None
        async with ws:
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    yield json.loads(msg.data)
                elif msg.type == aiohttp.WSMsgType.CLOSE:
                    if msg.data == aiohttp.WSCloseCode.OK:
                        return
                    raise StreamClosed(msg.data, msg.extra or "")
                elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR,
                                  aiohttp.WSMsgType.CLOSING):
                    code = ws.close_code
                    if code == aiohttp.WSCloseCode.OK:
                        return
                    raise StreamClosed(code or 1006, "connection lost")

    async def _handshake_error(self, path, params, err) -> ApiError:
        """The server refused the upgrade (401, 404, 400 ...): it says why in a JSON body that
        the WebSocket handshake drops, so ask the same URL over plain HTTP for the message."""
        try:
            await self._call("GET", path, params=params)
        except ApiError as answer:
            if answer.status == err.status:
                return answer
        return ApiError(err.status, f"the server refused the WebSocket {path}: {err.message}")


def _reason(err: Exception) -> str:
    cause = getattr(err, "os_error", None) or err
    if isinstance(cause, OSError) and cause.errno and not isinstance(cause, socket.gaierror):
        return os.strerror(cause.errno)       # "Connection refused", not "Connect call failed"
    return getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
