"""Every operation of the OpenAPI document: the routes of `auditd/http/routes.py`, with what each
takes and every status it can answer. `tests/test_openapi.py` checks that this covers every route.

Schemas are named by their component (`"Action"`, `"Error"`); the error responses are shared
components (`"400"`, ...), made in `responses()`.
"""
from ...schemas import ListQuerySchema, MAX_LOG_LINE, MAX_LOG_LINES

PREFIXES = (("", "/api/audit/v1"), ("InNamespace", "/api/audit/v1/{namespace}"))
ACTION_URI_HEADER = "X-DockerCloud-Action-URI"


def ref(kind: str, name: str) -> dict:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema) -> dict:
    return {"application/json": {"schema": schema}}


ERRORS = {
    "400": "Bad request: a bad query parameter, body, header value or path; the error names it",
    "401": "No credentials, or wrong ones",
    "403": "Valid credentials without the role this needs (or, for a WebSocket or a ticket, a "
           "browser page of another origin)",
    "404": "No such action, or a namespace or action the caller may not see (never a 403)",
    "405": "The path exists but not with this method; `Allow` lists the methods it takes",
    "409": "It conflicts with what is stored (a uuid that exists already)",
    "413": "The request body is larger than `max_body_bytes` (8 MiB by default)",
    "415": "A Content-Type this operation does not take",
    "429": "Past a per-user rate (retries, cancels): `Retry-After` says when to try again",
    "503": "The store failed or the server is at a bound (bytes in flight); retry later",
}


def responses() -> dict:
    """The shared error responses: each is `{"error": str}`."""
    out = {}
    for status, description in ERRORS.items():
        response = {"description": description, "content": _json("Error")}
        if status == "401":
            response["headers"] = {"WWW-Authenticate": {
                "required": True, "schema": {"type": "string", "example": 'Basic realm="auditd"'},
                "description": "Basic realm=\"auditd\""}}
        elif status == "405":
            response["headers"] = {"Allow": {"required": True, "schema": {"type": "string"}}}
        elif status in ("429", "503"):
            response["headers"] = {"Retry-After": {
                "required": status == "429", "schema": {"type": "string"},
                "description": "seconds to wait before trying again"}}
        out[status] = response
    return out


def _errors(*statuses) -> dict:
    return {status: ref("responses", status) for status in statuses}


def _action(status: str, description: str, links=None) -> dict:
    response = {"description": description, "content": _json("Action"),
                "headers": {ACTION_URI_HEADER: {
                    "required": True, "schema": {"type": "string"},
                    "description": "the action's resource_uri (of the new one, after a retry)"}}}
    if links:
        response["links"] = links
    return response


RECORD_EXAMPLE = {"action": "Service Redeploy", "object": "/api/app/v1/service/web/",
                  "parents": ["/api/app/v1/stack/shop/"], "method": "POST",
                  "path": "/api/app/v1/service/web/redeploy/", "state": "Success"}
UUID = {"name": "uuid", "in": "path", "required": True, "schema": {"type": "string"},
        "description": "the action's uuid (a full one: short ids go through "
                       "`?uuid__startswith=` of the list)"}
NAMESPACE = {"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "narrows everything to this namespace (a user, or an organization "
                            "it belongs to); one the caller may not see is a 404"}
BASIC = [{"basic": []}, {"apiKey": []}]
STREAM_AUTH = BASIC + [{"streamUser": [], "streamToken": []}, {"streamTicket": []}]

_ACTION_OPS = ("getAction", "changeState", "cancelAction", "retryAction", "appendLogs")


def _links(suffix: str, namespaced: bool) -> dict:
    """From a response with an Action, to the operations on it: stateful tests follow these."""
    parameters = {"uuid": "$response.body#/uuid"}
    if namespaced:
        parameters["namespace"] = "$request.path.namespace"
    return {op: {"operationId": op + suffix, "parameters": dict(parameters)} for op in _ACTION_OPS}


def rest_paths(suffix: str, prefix: str) -> dict:
    """The REST operations of the Actions API and the producer API under one prefix."""
    namespaced = bool(suffix)
    ns = [NAMESPACE] if namespaced else []
    maybe_404 = ("404",) if namespaced else ()
    where = " in that namespace" if namespaced else ""
    links = _links(suffix, namespaced)
    return {
        prefix + "/action/": {
            "parameters": ns,
            "get": {
                "operationId": "listActions" + suffix, "tags": ["actions"],
                "summary": "List actions" + where + ", newest first",
                "description": "Filters combine (AND). An unknown parameter, one given twice, "
                               "a bad date, boolean, state or number, or `include_related` "
                               "without `object` is a 400 naming it. `next` links carry a "
                               "`cursor`; `offset` alone works too.",
                "parameters": [{"in": "query", "schema": ListQuerySchema}],
                "responses": {"200": {"description": "A page of actions",
                                      "content": _json("ActionList")},
                              **_errors("400", "401", *maybe_404, "503")},
            },
            "post": {
                "operationId": "recordAction" + suffix, "tags": ["producer"],
                "summary": "Record an action" + where + " (producer API; role producer)",
                "description": "Missing `ip` and `user_agent` come from the request; `user` "
                               "defaults to the caller and `namespace` to `user`. `end_date` "
                               "only with a final state, not before `start_date`.",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": ref("schemas", "RecordAction"), "example": RECORD_EXAMPLE}}},
                "responses": {"201": _action("201", "The recorded action", links),
                              **_errors("400", "401", "403", "413", "415", "503")},
            },
        },
        prefix + "/action/{uuid}/": {
            "parameters": [*ns, UUID],
            "get": {
                "operationId": "getAction" + suffix, "tags": ["actions"],
                "summary": "One action",
                "responses": {"200": {"description": "The action", "content": _json("Action")},
                              **_errors("400", "401", "404", "503")},
            },
            "patch": {
                "operationId": "changeState" + suffix, "tags": ["producer"],
                "summary": "Move an action to a new state (producer API; role producer)",
                "description": "Allowed moves: Pending to In progress, Canceling, Canceled or "
                               "Failed; In progress to Success, Failed or Canceling; Canceling "
                               "to Canceled, Success or Failed. Anything else is a 400 naming "
                               "both states.",
                "requestBody": {"required": True, "content": _json("StateChange")},
                "responses": {"200": _action("200", "The action in its new state", links),
                              **_errors("400", "401", "403", "404", "413", "415", "503")},
            },
        },
        prefix + "/action/{uuid}/cancel/": {
            "parameters": [*ns, UUID],
            "post": {
                "operationId": "cancelAction" + suffix, "tags": ["actions"],
                "summary": "Cancel an action",
                "description": "Pending becomes Canceled at once; In progress becomes "
                               "Canceling (its producer finishes the move). Otherwise 400.",
                "responses": {"202": _action("202", "The action, canceled or canceling", links),
                              **_errors("400", "401", "404", "429", "503")},
            },
        },
        prefix + "/action/{uuid}/retry/": {
            "parameters": [*ns, UUID],
            "post": {
                "operationId": "retryAction" + suffix, "tags": ["actions"],
                "summary": "Retry an action: records a new one",
                "description": "Allowed when `can_be_retried` is true; otherwise 400. The new "
                               "action is Pending, by the caller, with the original's action, "
                               "method, path, object, body, parents, namespace and flags.",
                "responses": {"202": _action("202", "The new action", links),
                              **_errors("400", "401", "404", "429", "503")},
            },
        },
        prefix + "/action/{uuid}/logs/": {
            "parameters": [*ns, UUID],
            "get": logs_stream("streamLogs" + suffix),
            "post": {
                "operationId": "appendLogs" + suffix, "tags": ["producer"],
                "summary": "Append log lines (producer API; role producer)",
                "description": "A JSON array of strings or of log objects, or text/plain (one "
                               "line each). Stored whole or not at all; appending to a final "
                               "action is allowed.",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {
                        "type": "array", "maxItems": MAX_LOG_LINES,
                        "items": {"oneOf": [{"type": "string", "maxLength": MAX_LOG_LINE},
                                            ref("schemas", "LogLine")]}}},
                    "text/plain": {"schema": {"type": "string"}}}},
                "responses": {"201": {"description": "How many lines were stored",
                                      "content": _json("Appended"),
                                      "headers": _action("201", "")["headers"]},
                              **_errors("400", "401", "403", "404", "413", "415", "503")},
            },
        },
        prefix + "/events/": {"parameters": ns, "get": events_stream("streamEvents" + suffix,
                                                                     namespaced)},
    }


# ---------------------------------------------------------------------------- WebSockets

_HANDSHAKE = [
    {"name": "Connection", "in": "header", "required": True,
     "schema": {"type": "string", "enum": ["Upgrade"]}},
    {"name": "Upgrade", "in": "header", "required": True,
     "schema": {"type": "string", "enum": ["websocket"]}},
    {"name": "Sec-WebSocket-Version", "in": "header", "required": True,
     "schema": {"type": "string", "enum": ["13"]}},
    {"name": "Sec-WebSocket-Key", "in": "header", "required": True,
     "schema": {"type": "string"}, "description": "16 random bytes, base64 (RFC 6455)"},
    {"name": "Origin", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "a browser's page origin: another origin than this server's is a 403"},
]
_STREAM_CREDENTIALS = [
    {"name": "user", "in": "query", "schema": {"type": "string"},
     "description": "with `token`: credentials for clients that cannot set headers"},
    {"name": "token", "in": "query", "schema": {"type": "string"}, "description": "the API key"},
    {"name": "ticket", "in": "query", "schema": {"type": "string"},
     "description": "a ticket from POST /ui/api/ticket (the console's way; single use)"},
]
_CLOSES = ("Close codes: 1000 when the stream is complete, 1001 when the server shuts down, "
           "1008 when the caller loses access (key rotated, user or membership removed), "
           "1011 on an internal error, 1013 when the client does not keep up (reconnect).")


def _upgrade(messages: list, description: str) -> dict:
    return {"description": description + " " + _CLOSES,
            "headers": {"Upgrade": {"required": True, "schema": {"type": "string"}},
                        "Connection": {"required": True, "schema": {"type": "string"}},
                        "Sec-WebSocket-Accept": {"required": True, "schema": {"type": "string"}}},
            "x-websocket-messages": {"oneOf": [ref("schemas", m) for m in messages]}}


def _logs_upgrade() -> dict:
    answer = _upgrade(["LogMessage"], "Switching to the WebSocket protocol; the server sends "
                      "`LogMessage`s (with `batch`, arrays of them).")
    answer["x-websocket-messages"]["oneOf"].append(
        {"type": "array", "items": ref("schemas", "LogMessage")})
    return answer


def logs_stream(operation_id: str) -> dict:
    return {
        "operationId": operation_id, "tags": ["streams"],
        "summary": "Stream an action's log lines (WebSocket)",
        "description": "A WebSocket: first the last `tail` lines, then, when following and the "
                       "action is not final, every new line in order, none twice, none missing; "
                       "then a normal close (1000) once the action is final and its lines are "
                       "sent. Each text message is a `LogMessage`. Auth and the 404 come before "
                       "the upgrade.",
        "security": STREAM_AUTH,
        "parameters": [
            {"name": "tail", "in": "query", "description": "how many of the last lines to send "
             "first (default 300), or `all`",
             "schema": {"type": "string", "pattern": "^([0-9]{1,18}|[Aa][Ll][Ll])$"}},
            {"name": "follow", "in": "query", "description": "keep sending new lines until the "
             "action ends (default true)", "schema": {"type": "boolean"}},
            {"name": "batch", "in": "query", "description": "an auditd extension (default "
             "false): each message is a JSON array of the `LogMessage`s of one write, up to "
             "64 KiB, for clients that render many lines (the console does)",
             "schema": {"type": "boolean"}},
            *_STREAM_CREDENTIALS, *_HANDSHAKE],
        "responses": {"101": _logs_upgrade(),
                      **_errors("400", "401", "403", "404", "503")},
    }


def events_stream(operation_id: str, namespaced: bool) -> dict:
    return {
        "operationId": operation_id, "tags": ["streams"],
        "summary": "Stream events: actions recorded or changed (WebSocket)",
        "description": "A WebSocket: one `AuthMessage`, then an `ActionEvent` for each action "
                       "the caller may see as it is recorded (`create`) or changed (`update`).",
        "security": STREAM_AUTH,
        "parameters": [
            {"name": "type", "in": "query", "schema": {"type": "string"},
             "description": "only events of this type (auditd sends `action`)"},
            {"name": "object", "in": "query", "schema": {"type": "string"},
             "description": "only events whose resource_uri is this"},
            {"name": "parent", "in": "query", "schema": {"type": "string"},
             "description": "only events with this URI among their parents (comma-joined: any)"},
            {"name": "parents", "in": "query", "schema": {"type": "string"},
             "description": "the same as `parent`"},
            *_STREAM_CREDENTIALS, *_HANDSHAKE],
        "responses": {"101": _upgrade(["AuthMessage", "ActionEvent"], "Switching to the "
                                      "WebSocket protocol; the server sends an `AuthMessage`, "
                                      "then `ActionEvent`s."),
                      **_errors("400", "401", "403", *(("404",) if namespaced else ()), "503")},
    }


def go_paths() -> dict:
    """go-dockercloud dials the log stream without /api."""
    return {
        "/audit/v1/action/{uuid}/logs/": {"parameters": [UUID],
                                          "get": logs_stream("streamLogsNoApi")},
        "/audit/v1/{namespace}/action/{uuid}/logs/": {
            "parameters": [NAMESPACE, UUID], "get": logs_stream("streamLogsNoApiInNamespace")},
    }


# ---------------------------------------------------------------------------- the rest

def other_paths() -> dict:
    public = {"security": []}
    return {
        "/api/audit/v1/openapi.json": {"get": {
            "operationId": "openapi", "tags": ["operations"], **public,
            "summary": "This document (no credentials needed)",
            "responses": {"200": {"description": "The OpenAPI document",
                                  "content": _json({"type": "object"})},
                          **_errors("400")}}},
        "/_auditd/reset/": {"post": {
            "operationId": "reset", "tags": ["stand-in"],
            "summary": "Delete every action, log line and object; users stay (role admin)",
            "responses": {"200": {"description": "How many actions went",
                                  "content": _json("Reset")},
                          **_errors("400", "401", "403", "503")}}},
        "/_auditd/seed/": {"post": {
            "operationId": "seed", "tags": ["stand-in"],
            "summary": "Load actions in the fixture format (role admin)",
            "description": "A JSON array of actions (the producer's shape plus uuid, location, "
                           "any state, logs and parents) or NDJSON, one action a line. An "
                           "empty body loads nothing.",
            "requestBody": {"required": False, "content": {
                "application/json": {"schema": {"type": "array", "items": ref("schemas",
                                                                              "ActionItem")}},
                # NDJSON: the same items, one JSON object a line
                "application/x-ndjson": {"schema": {"type": "array", "items": ref(
                    "schemas", "ActionItem")}}}},
            "responses": {"201": {"description": "What was loaded", "content": _json("Seed")},
                          **_errors("400", "401", "403", "409", "413", "415", "503")}}},
        "/_auditd/health": {"get": {
            "operationId": "health", "tags": ["operations"], **public,
            "summary": "Whether the store answers (no credentials needed)",
            "responses": {
                "200": {"description": "The store works", "content": _json("Health")},
                "400": ref("responses", "400"),
                "503": {"description": "The store fails: the status and the reason",
                        "content": _json("HealthFailure")}}}},
        "/_auditd/metrics": {"get": {
            "operationId": "metrics", "tags": ["operations"], **public,
            "summary": "Prometheus metrics (no credentials needed)",
            "responses": {"200": {"description": "Prometheus text format 0.0.4",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}},
                          **_errors("400")}}},
        "/ui/api/ticket": {"post": {
            "operationId": "issueTicket", "tags": ["console"], "security": BASIC,
            "summary": "A ticket for one WebSocket handshake within 30 s (the web console's)",
            "description": "Browsers cannot set headers on a WebSocket: the console asks for a "
                           "ticket with its credentials and opens the stream with `?ticket=`.",
            "responses": {"201": {"description": "The ticket", "content": _json("Ticket")},
                          **_errors("400", "401", "403", "503")}}},
    }
