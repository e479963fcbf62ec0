"""The Action as every response carries it (CONTRACT.md section 2), defined once.

`render_action(action)` is the Action's JSON text: stores render it once per write (the `doc` a
page is joined from), and the API sends it as is.
"""
from marshmallow import Schema, fields

from . import dates
from .actions import CANCELABLE_STATES, FINAL_STATES
from .compiled import compile_dump
from .uris import action_uri


class ActionSchema(Schema):
    """The Action exactly as in CONTRACT.md section 2: these 17 keys, no others, strings never null."""

    resource_uri = fields.Function(lambda a: action_uri(a["uuid"]))
    uuid = fields.String()
    object = fields.String()
    action = fields.String()
    method = fields.String()
    path = fields.String()
    user = fields.String()
    user_agent = fields.String()
    start_date = fields.Function(lambda a: dates.format_rfc2822(a["start_ts"]))
    end_date = fields.Function(
        lambda a: None if a["end_ts"] is None else dates.format_rfc2822(a["end_ts"]))
    state = fields.String()
    ip = fields.String()
    location = fields.String()
    is_user_action = fields.Function(lambda a: bool(a["is_user_action"]))
    can_be_canceled = fields.Function(
        lambda a: bool(a["cancelable"]) and a["state"] in CANCELABLE_STATES)
    can_be_retried = fields.Function(
        lambda a: bool(a["retriable"]) and a["state"] in FINAL_STATES)
    body = fields.String(allow_none=True)


ACTION_SCHEMA = ActionSchema()
WIRE_FIELDS = tuple(ACTION_SCHEMA.dump_fields)

# The Action's JSON text, as stored in `doc` and sent as is: ACTION_SCHEMA.dump, compiled.
render_action = compile_dump(ACTION_SCHEMA, separators=(", ", ": "), ensure_ascii=False)
