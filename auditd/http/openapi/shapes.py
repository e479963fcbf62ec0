"""What the API answers, as marshmallow schemas for the OpenAPI document only.

The Action itself is `auditd.model.document.ActionSchema` and what clients send is in
`auditd.schemas`; these are the envelopes and small bodies around them, written once here so the
document is generated from schemas like the rest (the handlers build these bodies by hand, for
speed: `tests/test_openapi.py` checks real answers against them). Marshmallow refuses unknown
keys by default, so each becomes `additionalProperties: false` unless it says otherwise.
"""
from marshmallow import INCLUDE, Schema, fields, validate

from ...model.document import ActionSchema


class ErrorSchema(Schema):
    """Every error: 4xx or 5xx (CONTRACT.md section 9)."""
    error = fields.String(required=True, validate=validate.Length(min=1), metadata={
        "description": "what went wrong and what is accepted",
        "example": "invalid query: state: must be one of: Pending, In progress, ..."})


class ListMetaSchema(Schema):
    limit = fields.Integer(required=True, metadata={"minimum": 1, "description":
                           "the effective page size (25 by default, at most 1000)"})
    next = fields.String(required=True, allow_none=True, metadata={
        "description": "the next page's path (it starts with /api/ and keeps every filter, "
                       "and carries a cursor), or null on the last page"})
    offset = fields.Integer(required=True, metadata={"minimum": 0})
    previous = fields.String(required=True, allow_none=True, metadata={
        "description": "the previous page's path, or null on the first page"})
    total_count = fields.Integer(required=True, metadata={
        "minimum": 0, "description": "every action that matches the filters"})


class ActionListSchema(Schema):
    """A page of the list (CONTRACT.md section 4): newest first unless order_by says otherwise."""
    meta = fields.Nested(ListMetaSchema, required=True)
    objects = fields.List(fields.Nested(ActionSchema), required=True)


class AppendedSchema(Schema):
    appended = fields.Integer(required=True, metadata={
        "minimum": 0, "description": "how many lines were stored (all of them, or none)"})


class DeletedSchema(Schema):
    actions = fields.Integer(required=True, metadata={"minimum": 0})
    log_lines = fields.Integer(required=True, metadata={"minimum": 0})
    objects = fields.Integer(required=True, metadata={
        "minimum": 0, "description": "objects of the graph (targets and their parents)"})


class ResetSchema(Schema):
    deleted = fields.Nested(DeletedSchema, required=True,
                            metadata={"description": "what was deleted"})


class SeedSchema(Schema):
    loaded = fields.Integer(required=True, metadata={"minimum": 0})
    log_lines = fields.Integer(required=True, metadata={"minimum": 0})
    objects = fields.List(fields.Nested(ActionSchema), required=True,
                          metadata={"description": "the loaded actions, in the file's order"})


class HealthSchema(Schema):
    """GET /_auditd/health while the store answers."""

    class Meta:
        unknown = INCLUDE

    status = fields.String(required=True, metadata={"enum": ["ok"]})
    version = fields.String(metadata={"description": "auditd's version"})
    schema_version = fields.Integer(metadata={"description": "the database's schema version"})
    actions = fields.Integer(metadata={"minimum": 0, "description": "actions stored"})
    uptime_seconds = fields.Float(metadata={"minimum": 0})


class HealthFailureSchema(Schema):
    """GET /_auditd/health while the store fails: the status and the reason."""

    class Meta:
        unknown = INCLUDE

    status = fields.String(required=True, metadata={
        "description": "not 'ok': what is wrong, in a word ('degraded')"})
    error = fields.String(metadata={"description": "the reason"})


class TicketSchema(Schema):
    """POST /ui/api/ticket: a ticket for one WebSocket handshake (`?ticket=`)."""
    ticket = fields.String(required=True, metadata={"description": "opaque, single use"})
    expires_in = fields.Integer(required=True, metadata={
        "description": "seconds the ticket stays good for"})
    user = fields.String(required=True, metadata={"description": "who the stream will be"})


# ---------------------------------------------------------------------------- WebSocket messages

class LogMessageSchema(Schema):
    """One message of the logs stream: one log line (CONTRACT.md section 7)."""
    type = fields.String(required=True, metadata={"enum": ["log"]})
    log = fields.String(required=True, metadata={"description": "the line, without its newline"})
    timestamp = fields.Integer(required=True, metadata={"description": "Unix seconds"})
    streamType = fields.String(metadata={
        "description": "the producer's stream name (stdout, stderr), when it gave one"})


class AuthMessageSchema(Schema):
    """The events stream's first message, right after the upgrade."""
    type = fields.String(required=True, metadata={"enum": ["auth"]})
    user = fields.String(required=True, metadata={"description": "who the stream serves"})


class ActionEventSchema(Schema):
    """An events stream message: an action the caller may see was recorded or changed."""
    type = fields.String(required=True, metadata={"enum": ["action"]})
    action = fields.String(required=True, metadata={"enum": ["create", "update"]})
    parents = fields.List(fields.String(), required=True, metadata={
        "description": "the action's object, then that object's ancestors, nearest first"})
    resource_uri = fields.String(required=True, metadata={
        "description": "/api/audit/v1/action/<uuid>/ of the action"})
    state = fields.String(required=True, metadata={"description": "the action's state now"})
    uuid = fields.String(required=True, metadata={"description": "this event's own uuid"})
    datetime = fields.String(required=True, metadata={
        "description": "ISO 8601, UTC", "example": "2016-02-01T16:47:28Z"})
