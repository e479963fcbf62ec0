"""The compiled load and dump (auditd/model/compiled.py) agree with marshmallow, and are the ones in use."""
import itertools
import json

import pytest
from marshmallow import Schema, ValidationError, fields, post_load

from auditd import schemas
from auditd.model.actions import STATES, new_action
from auditd.model.compiled import compile_dump, compile_load
from auditd.model.document import ACTION_SCHEMA, render_action
from auditd.schemas import RECORD_ACTION_SCHEMA, load_record_action

VALID = {
    "action": "Service Start", "namespace": "ns01", "state": "Success",
    "object": "/api/app/v1/ns01/service/6f1c1d1e-3b0a-4c8e-9a53-2f1f3a0b7c11/",
    "parents": ["/api/app/v1/ns01/stack/0b5ae2c5-67a4-4d55-8f5b-12c4b8f0e9a3/"],
    "method": "POST", "path": "/api/app/v1/ns01/service/6f1c/start/", "user": "ns01",
    "ip": "10.1.2.3", "user_agent": "docker-cloud-cli/1.0.9",
}

# For each key: values marshmallow accepts and values it refuses (with the rest of VALID).
VARIANTS = {
    "action": ["x", "é" * 256, "", "x" * 257, 7, None, ["x"], True],
    "namespace": ["acme", "", "x" * 257, None, 3],
    "state": list(STATES) + ["success", "", None, 1],
    "object": ["", "/api/app/v1/x/", "x" * 4097, None, {}],
    "parents": [[], ["/a/"] * 16, ["/a/"] * 17, [""], [None], ["/a/", 3], "/a/", None, {}],
    "method": ["GET", "x" * 16, "x" * 17, None, 0],
    "ip": ["::1", "", "x" * 65, None],
    "user_agent": ["", "ü" * 4096, "x" * 4097, False],
    "body": [None, "", "{\"a\": 1}", {"a": [1, 2]}, [1, "x"], 3, True, "x" * (256 * 1024 + 1)],
    "start_date": ["Wed, 17 Sep 2014 08:26:22 +0000", "2014-09-17T08:26:22Z", 1410942382,
                   1410942382.5, "yesterday", None, True, 10**20],
    "end_date": ["Wed, 17 Sep 2014 08:26:22 +0000", 1410942383, "nope", None],
    "is_user_action": [True, False, 1, "true", None],
    "can_be_canceled": [True, False, 0],
    "can_be_retried": [False, "no"],
    "user": ["bob", "", None],
    "unknown_key": [1],
    "get_all_attributes": [True],
}


def outcome(load, payload):
    try:
        return "ok", load(payload)
    except ValidationError as err:
        return "error", err.messages


def payloads():
    yield VALID
    yield {"action": "Minimal"}
    yield {}
    yield {"object": "/x/"}
    for key, values in VARIANTS.items():
        for value in values:
            yield {**VALID, key: value}
            yield {"action": "A", key: value}
    # pairs that only the schema-level validation refuses or accepts
    for state, end, start in itertools.product(("Success", "Pending", None), (1410942382, None),
                                              (1410942383, 1410942381, None)):
        payload = {"action": "A"}
        for key, value in (("state", state), ("end_date", end), ("start_date", start)):
            if value is not None:
                payload[key] = value
        yield payload


@pytest.mark.parametrize("payload", list(payloads()), ids=lambda p: json.dumps(p)[:60])
def test_compiled_record_load_agrees_with_marshmallow(payload):
    assert outcome(load_record_action, payload) == outcome(RECORD_ACTION_SCHEMA.load, payload)


def test_non_object_payloads_get_marshmallow_errors():
    for payload in ([], "x", None, 3, [VALID]):
        assert outcome(load_record_action, payload) == outcome(RECORD_ACTION_SCHEMA.load, payload)


def test_valid_payloads_never_reach_marshmallow(monkeypatch):
    """The fast path really is taken: with marshmallow's load disabled, valid input still loads."""
    accepted = [p for p in payloads() if outcome(RECORD_ACTION_SCHEMA.load, p)[0] == "ok"]
    assert len(accepted) > 40
    expected = [RECORD_ACTION_SCHEMA.load(p) for p in accepted]

    def refuse(*args, **kwargs):
        raise AssertionError("marshmallow's load was called")

    monkeypatch.setattr(RECORD_ACTION_SCHEMA, "load", refuse)
    assert [load_record_action(p) for p in accepted] == expected


def actions():
    base = new_action(**RECORD_ACTION_SCHEMA.load(VALID), location="Paris, France")
    base.update(id=1, object_id=2, log_count=0)
    for state, body, flags, end in itertools.product(
            STATES, (None, "", "{\"a\":1}", "ünïcødé \u2028 \"quoted\""), (0, 1),
            (None, 1410942383)):
        yield {**base, "state": state, "body": body, "is_user_action": flags,
               "cancelable": flags, "retriable": 1 - flags, "end_ts": end}


@pytest.mark.parametrize("action", list(actions()), ids=lambda a: f"{a['state']}-{a['body']!r:.12}")
def test_compiled_render_agrees_with_marshmallow(action):
    expected = json.dumps(ACTION_SCHEMA.dump(action), separators=(", ", ": "), ensure_ascii=False)
    assert render_action(action) == expected
    assert list(json.loads(render_action(action))) == list(ACTION_SCHEMA.fields)


def test_render_of_an_incomplete_action_is_marshmallows():
    action = next(actions())
    del action["location"]
    assert render_action(action) == json.dumps(ACTION_SCHEMA.dump(action), separators=(", ", ": "),
                                               ensure_ascii=False)
    assert "location" not in json.loads(render_action(action))


def test_the_write_path_uses_the_compiled_functions():
    assert getattr(schemas.load_record_action, "compiled", False)
    assert getattr(schemas.load_action_item, "compiled", False)
    assert getattr(render_action, "compiled", False)


def test_schemas_the_compiler_does_not_know_get_marshmallow_itself():
    class WithPostLoad(Schema):
        name = fields.String()

        @post_load
        def shout(self, data, **kwargs):
            return {"name": data["name"].upper()}

    schema = WithPostLoad()
    assert compile_load(schema) == schema.load
    assert compile_load(schema)({"name": "x"}) == {"name": "X"}

    class Other(Schema):
        when = fields.DateTime()
        count = fields.Integer(load_default=3)

    other = Other()
    assert compile_load(other) == other.load     # load_default: not compiled
    dump = compile_dump(other)                    # DateTime: dumped by the field itself
    assert dump({"when": None, "count": 4}) == json.dumps(other.dump({"when": None, "count": 4}))
