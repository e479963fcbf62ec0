"""The canonical leaf encoding of events (auditd/leaves.py, docs/TRANSPARENCY.md)."""
import json

import pytest

from auditd import leaves
from auditd.leaves import (cancel_leaf, decode_leaf, logs_leaf, record_leaf, replay, retry_leaf,
                           state_leaf)
from auditd.merkle import VerificationError, leaf_hash

UUID = "5f3b3e8a-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
ACTION = {
    "uuid": UUID, "namespace": "alice", "state": "In progress", "action": "Service Create",
    "method": "POST", "path": "/api/app/v1/service/", "object": "/api/app/v1/service/x/",
    "parents": ["/api/app/v1/stack/s/"], "user": "alice", "user_agent": "curl/8.0",
    "ip": "192.0.2.7", "location": "Zürich", "body": None, "start_ts": 1700000000,
    "end_ts": None, "is_user_action": 1, "cancelable": 1, "retriable": 0,
}
# The worked example of docs/TRANSPARENCY.md: these exact bytes and this leaf hash.
RECORD_BYTES = (
    '{"action":"Service Create","body":null,"cancelable":true,"end_ts":null,"ip":"192.0.2.7",'
    '"is_user_action":true,"location":"Zürich","method":"POST","namespace":"alice",'
    '"object":"/api/app/v1/service/x/","parents":["/api/app/v1/stack/s/"],'
    '"path":"/api/app/v1/service/","retriable":false,"start_ts":1700000000,"state":"In progress",'
    '"type":"record","user":"alice","user_agent":"curl/8.0",'
    '"uuid":"5f3b3e8a-1c2d-4e5f-8a9b-0c1d2e3f4a5b","v":1}').encode()


def test_a_record_leaf_is_canonical_json_of_every_stored_field():
    data = record_leaf(ACTION)
    assert data == RECORD_BYTES
    assert leaf_hash(data).hex() == \
        "68e31cf457d6afa689e9371722be8c0c4a4f9a52323a8b4c043c79d20acc77c9"
    event = decode_leaf(data)
    assert event["type"] == "record" and event["retriable"] is False and event["body"] is None


def _other(value):
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return value + ["/api/app/v1/x/"]
    if isinstance(value, int):
        return 1 - value if value in (0, 1) else value + 1
    return "x"   # None (body) or end_ts


@pytest.mark.parametrize("field", sorted(leaves.RECORD_FIELDS))
def test_changing_any_field_changes_the_leaf(field):
    changed = {**ACTION, field: _other(ACTION[field])}
    if field == "end_ts":
        changed[field] = 1700000001
    assert record_leaf(changed) != RECORD_BYTES
    assert decode_leaf(record_leaf(changed))[field] != decode_leaf(RECORD_BYTES)[field]


def test_strings_are_escaped_as_json_requires_and_utf8_otherwise():
    data = record_leaf({**ACTION, "body": 'a"b\\c\n\t\x01\x7f é \u2028 😀'})
    assert b'"body":"a\\"b\\\\c\\n\\t\\u0001\x7f \xc3\xa9 \xe2\x80\xa8 \xf0\x9f\x98\x80"' in data
    assert decode_leaf(data)["body"] == 'a"b\\c\n\t\x01\x7f é \u2028 😀'
    with pytest.raises(ValueError, match="surrogate"):
        record_leaf({**ACTION, "body": "\ud800"})
    with pytest.raises(ValueError, match="integer"):
        record_leaf({**ACTION, "start_ts": 2 ** 53})
    with pytest.raises(ValueError, match="'user' of a record leaf must be a string"):
        record_leaf({**ACTION, "user": 7})
    with pytest.raises(ValueError, match="'retriable' of a record leaf must be a boolean"):
        record_leaf({**ACTION, "retriable": "no"})
    with pytest.raises(ValueError, match="'parents' of a record leaf must be a list of strings"):
        record_leaf({**ACTION, "parents": [1]})


def test_the_other_events():
    assert state_leaf(UUID, "In progress", "Success", 1700000050, 1700000050) == (
        '{"end_ts":1700000050,"from":"In progress","time":1700000050,"to":"Success",'
        f'"type":"state","uuid":"{UUID}","v":1}}').encode()
    assert json.loads(cancel_leaf(UUID, "Pending", "Canceled", 5, 5))["type"] == "cancel"
    assert json.loads(retry_leaf(UUID, "new", 9)) == {
        "v": 1, "type": "retry", "uuid": UUID, "new_uuid": "new", "time": 9}
    data = logs_leaf(UUID, 3, [(10, "stdout", "one"), (11, None, "two")])
    assert data == ('{"first_seq":3,"lines":[[3,10,"stdout","one"],[4,11,null,"two"]],'
                    f'"type":"logs","uuid":"{UUID}","v":1}}').encode()
    with pytest.raises(ValueError, match="at least one line"):
        logs_leaf(UUID, 1, [])


@pytest.mark.parametrize("data,why", [
    (b'{"v": 1}', "unknown leaf type"),
    (b'\xff', "not UTF-8 JSON"),
    (b'[1]', "a leaf is a JSON object"),
    (b'{"type":"record","v":2}', "unknown leaf version"),
    (b'{"type":"retry","uuid":"a","v":1}', "missing new_uuid, time"),
    (b'{"new_uuid":"b","time":1,"type":"retry","uuid":"a","v":1,"x":0}', "unexpected x"),
    (b'{"new_uuid":"b","time":1.0,"type":"retry","uuid":"a","v":1}', "must be an integer"),
    (b'{"new_uuid":"b","time":true,"type":"retry","uuid":"a","v":1}', "must be an integer"),
    (b'{"new_uuid":"b","type":"retry","time":1,"uuid":"a","v":1}', "canonical"),
    (b'{"new_uuid":"b", "time":1,"type":"retry","uuid":"a","v":1}', "canonical"),
    (b'{"new_uuid":"\\u0062","time":1,"type":"retry","uuid":"a","v":1}', "canonical"),
    (b'{"first_seq":2,"lines":[[3,1,null,"x"]],"type":"logs","uuid":"a","v":1}', "numbered"),
    (b'{"first_seq":1,"lines":[[1,1,null]],"type":"logs","uuid":"a","v":1}', "must be a list"),
])
def test_decoding_refuses_anything_but_a_valid_canonical_leaf(data, why):
    with pytest.raises(VerificationError, match=why):
        decode_leaf(data)


def events(*datas):
    return [decode_leaf(d) for d in datas]


def test_replay_gives_the_action_its_events_built():
    action = replay(events(
        record_leaf(ACTION),
        logs_leaf(UUID, 1, [(1, "stdout", "a"), (2, "stderr", "b")]),
        state_leaf(UUID, "In progress", "Failed", 20, 20),
        logs_leaf(UUID, 3, [(3, None, "c")]),
        retry_leaf(UUID, "other", 30)))
    assert action["state"] == "Failed" and action["end_ts"] == 20
    assert action["log_count"] == 3
    assert action["logs"] == [(1, 1, "stdout", "a"), (2, 2, "stderr", "b"), (3, 3, None, "c")]
    assert action["retries"] == ["other"]
    assert action["ip"] == "192.0.2.7" and action["is_user_action"] is True


@pytest.mark.parametrize("sequence,why", [
    ([1, 0], "event 0: an action's first event is its record"),
    ([0, 2, 1], "event 1: a state from Canceling but the action was In progress"),  # reordered
    ([0, 2], "event 1: a state from Canceling"),                                     # deleted
    ([0, 4], "event 1: log lines from 3 but 0 came before"),                         # deleted
    ([0, 3, 4, 3], "event 3: log lines from 1 but 3 came before"),                   # repeated
    ([0, 0], "event 1: a second record event"),
    ([0, 5], "event 1: it is about other, not"),
])
def test_replay_names_a_missing_repeated_or_reordered_event(sequence, why):
    pool = [record_leaf(ACTION),
            cancel_leaf(UUID, "In progress", "Canceling", 10, None),
            state_leaf(UUID, "Canceling", "Canceled", 11, 11),
            logs_leaf(UUID, 1, [(1, None, "a"), (2, None, "b")]),
            logs_leaf(UUID, 3, [(3, None, "c")]),
            state_leaf("other", "Pending", "In progress", 1, None)]
    with pytest.raises(VerificationError, match=why):
        replay(events(*(pool[i] for i in sequence)))
