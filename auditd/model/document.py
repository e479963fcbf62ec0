"""The Action as every response carries it (CONTRACT.md section 2), defined once.

`render_action(action)` is the Action's JSON text: stores render it once per write (the `doc` a
page is joined from), and the API sends it as is.
"""
from marshmallow import Schema, fields

from . import dates
from .actions import CANCELABLE_STATES, FINAL_STATES, STATES
from .compiled import compile_dump
from .uris import action_uri


# What each key is on the wire, for the OpenAPI document (auditd/http/openapi): the metadata of
# a field is its JSON Schema there. A Function field has no type of its own, so it says its own.
_DATE = {"type": "string", "example": "Wed, 17 Sep 2014 08:26:22 +0000",
         "pattern": r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|"
                    r"Sep|Oct|Nov|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} \+0000$"}
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_BOOL = {"type": "boolean"}


class ActionSchema(Schema):
    """The Action exactly as in CONTRACT.md section 2: these 17 keys, no others, strings never null."""

    resource_uri = fields.Function(lambda a: action_uri(a["uuid"]), metadata={
        "type": "string", "pattern": f"^/api/audit/v1/action/{_UUID}/$"})
    uuid = fields.String(metadata={"pattern": f"^{_UUID}$"})
    object = fields.String()
    action = fields.String()
    method = fields.String()
    path = fields.String()
    user = fields.String()
    user_agent = fields.String()
    start_date = fields.Function(lambda a: dates.format_rfc2822(a["start_ts"]), metadata=_DATE)
    end_date = fields.Function(
        lambda a: None if a["end_ts"] is None else dates.format_rfc2822(a["end_ts"]),
        allow_none=True, metadata=_DATE)
    state = fields.String(metadata={"enum": list(STATES)})
    ip = fields.String()
    location = fields.String()
    is_user_action = fields.Function(lambda a: bool(a["is_user_action"]), metadata=_BOOL)
    can_be_canceled = fields.Function(
        lambda a: bool(a["cancelable"]) and a["state"] in CANCELABLE_STATES, metadata=_BOOL)
    can_be_retried = fields.Function(
        lambda a: bool(a["retriable"]) and a["state"] in FINAL_STATES, metadata=_BOOL)
    body = fields.String(allow_none=True)


ACTION_SCHEMA = ActionSchema()
WIRE_FIELDS = tuple(ACTION_SCHEMA.dump_fields)

# The Action's JSON text, as stored in `doc` and sent as is: ACTION_SCHEMA.dump, compiled.
render_action = compile_dump(ACTION_SCHEMA, separators=(", ", ": "), ensure_ascii=False)
