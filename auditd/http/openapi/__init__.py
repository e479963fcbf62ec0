"""The OpenAPI 3 document of the whole API, generated from the marshmallow schemas with apispec.

What clients send comes from `auditd.schemas` (the list query, the producer's bodies, log lines,
fixture items), the Action from `auditd.model.document`, and the envelopes around them from
`shapes.py`; `paths.py` has the operations. Served without credentials at
`GET /api/audit/v1/openapi.json` (`serve`), and checked in as `docs/openapi.json`:

    python -m auditd.http.openapi > docs/openapi.json

`tests/test_openapi.py` fails when the checked-in file and the served document differ.
"""
import json

from aiohttp import web

from ... import __version__
from ...model import dates
from ...model.document import WIRE_FIELDS, ActionSchema
from ... import schemas
from . import paths, shapes, tamper

PATH = "/api/audit/v1/openapi.json"
OPENAPI_VERSION = "3.0.3"

DESCRIPTION = """\
The Docker Cloud Audit API ("Actions") as auditd serves it: every API call is recorded as an
*action*; clients list and filter actions, fetch one, cancel or retry it, and stream its log lines
over a WebSocket. Producers record actions, move their state and append log lines.

- Every path ends in `/`; the same path without it is served the same (no redirect).
- Every path under `/api/audit/v1/` also has a namespaced form `/api/audit/v1/{namespace}/...`
  that narrows it to that namespace.
- Errors are always JSON `{"error": "..."}` that names what was wrong. A method a path does not
  take is a 405 with `Allow`.
- Credentials: `Authorization: Basic base64(user:apikey)`, or `Authorization: ApiKey user:apikey`;
  the WebSocket streams also take `?user=&token=` or a console `?ticket=`.
- Roles: `user` reads, cancels and retries the actions of its namespaces; `producer` also records
  actions, changes their state and appends logs, in every namespace; `admin` does everything.
- The WebSocket routes are described as far as OpenAPI can: a GET with the upgrade headers, the 101
  answer, and their messages as schemas (`LogMessage`, `AuthMessage`, `ActionEvent`, named under
  `x-websocket-messages`).
"""

SECURITY_SCHEMES = {
    "basic": {"type": "http", "scheme": "basic",
              "description": "Basic base64(user:apikey)"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "Authorization",
               "description": "The older Tutum form: `Authorization: ApiKey user:apikey`"},
    "streamUser": {"type": "apiKey", "in": "query", "name": "user",
                   "description": "WebSocket streams only, with `token` (go-dockercloud)"},
    "streamToken": {"type": "apiKey", "in": "query", "name": "token",
                    "description": "WebSocket streams only, with `user`: the API key"},
    "streamTicket": {"type": "apiKey", "in": "query", "name": "ticket",
                     "description": "WebSocket streams only: a ticket from POST /ui/api/ticket"},
}

# The schemas of auditd.schemas and the shapes, by component name.
COMPONENTS = {
    "Action": ActionSchema, "ActionList": shapes.ActionListSchema,
    "RecordAction": schemas.RecordActionSchema, "StateChange": schemas.StateChangeSchema,
    "LogLine": schemas.LogLineSchema, "ActionItem": schemas.ActionItemSchema,
    "Appended": shapes.AppendedSchema, "Error": shapes.ErrorSchema,
    "Reset": shapes.ResetSchema, "Seed": shapes.SeedSchema, "Ticket": shapes.TicketSchema,
    "Health": shapes.HealthSchema, "HealthFailure": shapes.HealthFailureSchema,
    "LogMessage": shapes.LogMessageSchema, "AuthMessage": shapes.AuthMessageSchema,
    "ActionEvent": shapes.ActionEventSchema,
}

_DATE_FORMS = "a date: " + dates.ACCEPTED_FORMATS + "; " + dates.ACCEPTED_RANGE
_QUERY_BOOL = "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0)$"


def _custom_fields(self, field, ret, **kwargs) -> dict:
    """JSON Schema for auditd's own field types (apispec knows marshmallow's)."""
    if isinstance(field, schemas.QueryInteger):
        return {"type": "integer", "minimum": 0, "maximum": field.maximum}
    if isinstance(field, schemas.QueryBool):
        return {"type": "string", "pattern": _QUERY_BOOL,
                "description": "true or false (any case), or 1 or 0"}
    if isinstance(field, schemas.DateValue):
        return {"anyOf": [{"type": "string", "minLength": 1},
                          {"type": "number", "minimum": dates.MIN_TS, "maximum": dates.MAX_TS}],
                "description": _DATE_FORMS}
    if isinstance(field, schemas.PageCursor):
        return {"type": "string", "pattern": r"^-?[0-9]{1,13}\.[0-9]{1,18}$",
                "description": "the position a `next` link carries; copy it, never make one"}
    if isinstance(field, schemas.BodyValue):
        return {"description": "the audited call's body: a string kept as is, or any other JSON "
                               f"value stored encoded (at most {schemas.MAX_BODY} characters)"}
    if isinstance(field, schemas.UuidText):
        return {"type": "string", "format": "uuid"}
    if isinstance(field, schemas.ParentsValue):
        return {"type": "array", "maxItems": schemas.MAX_EDGES,
                "items": {"oneOf": [{"type": "string", "minLength": 1},
                                    {"type": "array", "minItems": 2, "maxItems": 2,
                                     "items": {"type": "string", "minLength": 1}}]},
                "description": "parent URIs, nearest first, or [child URI, parent URI] edges"}
    return {}


def build() -> dict:
    """The document, as a dict."""
    from apispec import APISpec                      # only when the document is made
    from apispec.ext.marshmallow import MarshmallowPlugin

    plugin = MarshmallowPlugin()
    spec = APISpec(title="auditd", version=__version__, openapi_version=OPENAPI_VERSION,
                   plugins=[plugin], info={"description": DESCRIPTION},
                   security=paths.BASIC)
    plugin.converter.add_attribute_function(_custom_fields)
    for name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)
    for name, schema in COMPONENTS.items():
        spec.components.schema(name, schema=schema)
    for name, schema in tamper.SCHEMAS.items():
        spec.components.schema(name, component=schema)
    # Every Action carries every one of its keys (CONTRACT.md section 2).
    spec.components.schemas["Action"]["required"] = list(WIRE_FIELDS)
    for status, response in paths.responses().items():
        spec.components.response(status, response)
    operations = {}
    for suffix, prefix in paths.PREFIXES:
        operations.update(paths.rest_paths(suffix, prefix))
    operations.update(paths.go_paths())
    operations.update(paths.other_paths())
    operations.update(tamper.tamper_paths(paths.PREFIXES))
    for path, item in operations.items():
        item = dict(item)
        parameters = item.pop("parameters", [])
        spec.path(path=path, operations=item, parameters=parameters or None)
    spec.tag({"name": "actions", "description": "The Docker Cloud Actions API"})
    spec.tag({"name": "producer", "description": "Recording actions (auditd's extension)"})
    spec.tag({"name": "streams", "description": "WebSockets: log lines and events"})
    spec.tag({"name": "stand-in", "description": "Test helpers for other projects' tests"})
    spec.tag({"name": "operations", "description": "Health, metrics, this document"})
    spec.tag({"name": "console", "description": "The web console's stream tickets"})
    spec.tag({"name": "tamper evidence",
              "description": "Signed checkpoints and proofs (docs/TRANSPARENCY.md)"})
    return spec.to_dict()


def render() -> str:
    """The document as the JSON text that is served and checked in."""
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


_RENDERED: list[bytes] = []


async def serve(request: web.Request) -> web.Response:
    """GET /api/audit/v1/openapi.json, built on first use."""
    if not _RENDERED:
        _RENDERED.append(render().encode("utf-8"))
    return web.Response(body=_RENDERED[0], content_type="application/json", charset="utf-8")
