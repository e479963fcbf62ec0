"""Bad requests: each gets a 4xx JSON {"error"} that names the problem, and changes nothing.

Each table runs in one test (one app) and reports every case that misbehaved; after every case the
stored actions and log lines are compared with what they were before it.
"""
import io
import json

import pytest

from conftest import error_of

LIST = "/api/audit/v1/action/"
ONE = "/api/audit/v1/action/{uuid}/"
LOGS = "/api/audit/v1/action/{uuid}/logs/"
DATE_WORDS = ["RFC 2822", "ISO 8601", "Unix seconds"]
OVERSIZED = object()   # stands for a body one byte over the 8 MiB default limit


def case(name, method, path, status, words, as_="admin", **kw):
    return pytest.param(method, path, status, words, as_, kw, id=name)


LIST_CASES = [
    case("unknown-param", "GET", LIST + "?colour=red", 400, ["colour", "accepted", "state"]),
    case("unknown-params-named", "GET", LIST + "?page=2&per_page=3", 400, ["page", "per_page"]),
    case("duplicated-param", "GET", LIST + "?state=Success&state=Failed", 400,
         ["state", "2 times"]),
    case("duplicated-limit", "GET", LIST + "?limit=1&limit=2", 400, ["limit", "2 times"]),
    case("bad-state", "GET", LIST + "?state=Done", 400, ["state", "Pending", "In progress"]),
    case("lowercase-state", "GET", LIST + "?state=success", 400, ["state", "Success"]),
    case("bad-date", "GET", LIST + "?start_date__gte=yesterday", 400,
         ["start_date__gte", *DATE_WORDS]),
    case("bad-end-date", "GET", LIST + "?end_date__lte=2014-13-45", 400, ["end_date__lte"]),
    case("empty-date", "GET", LIST + "?start_date__lte=", 400, ["start_date__lte"]),
    case("bad-bool", "GET", LIST + "?is_user_action=maybe", 400,
         ["is_user_action", "true", "false"]),
    case("include-related-without-object", "GET", LIST + "?include_related=true", 400,
         ["include_related", "object"]),
    case("include-related-false-without-object", "GET", LIST + "?include_related=false", 400,
         ["include_related", "object"]),
    case("bad-include-related", "GET", LIST + "?object=/api/app/v1/service/S/&include_related=yes",
         400, ["include_related", "true"]),
    case("bad-order-by", "GET", LIST + "?order_by=uuid", 400, ["order_by", "start_date"]),
    case("bad-uuid-prefix", "GET", LIST + "?uuid__startswith=zz", 400, ["uuid__startswith"]),
    case("bad-cursor", "GET", LIST + "?cursor=abc", 400, ["cursor"]),
    case("date-beyond-9999", "GET", LIST + "?start_date__gte=99999999999999999999", 400,
         ["start_date__gte", "range"]),
    case("date-before-year-1", "GET", LIST + "?end_date__lte=-99999999999", 400,
         ["end_date__lte", "range"]),
    case("zone-pushes-past-9999", "GET", LIST + "?start_date__lte=9999-12-31T23:59:59-01:00", 400,
         ["start_date__lte", "range"]),
    case("huge-offset", "GET", LIST + "?offset=99999999999999999999", 400, ["offset"]),
    case("huge-cursor", "GET", LIST + "?cursor=99999999999999999999.99999999999999999999", 400,
         ["cursor"]),
    case("negative-limit", "GET", LIST + "?limit=-5", 400, ["limit"]),
    case("text-offset", "GET", LIST + "?offset=ten", 400, ["offset"]),
    case("query-on-get-one", "GET", ONE + "?fields=all", 400, ["fields"]),
    case("query-on-cancel", "POST", ONE + "cancel/?force=1", 400, ["force"]),
]

RECORD = "/api/audit/v1/action/"
RECORD_CASES = [
    case("malformed-json", "POST", RECORD, 400, ["JSON"], as_="producer",
         data='{"action": ', headers={"Content-Type": "application/json"}),
    case("empty-body", "POST", RECORD, 400, ["JSON"], as_="producer", data=b"",
         headers={"Content-Type": "application/json"}),
    case("not-utf8", "POST", RECORD, 400, ["JSON"], as_="producer", data=b'{"action": "\xff"}',
         headers={"Content-Type": "application/json"}),
    case("json-array", "POST", RECORD, 400, ["object"], as_="producer", json=[{"action": "X"}]),
    case("json-string", "POST", RECORD, 400, ["object"], as_="producer", json="Service Create"),
    case("json-null", "POST", RECORD, 400, ["object"], as_="producer", json=None),
    case("missing-action", "POST", RECORD, 400, ["action"], as_="producer", json={"user": "x"}),
    case("unknown-key", "POST", RECORD, 400, ["colour", "accepted"], as_="producer",
         json={"action": "X", "colour": "red"}),
    case("action-not-string", "POST", RECORD, 400, ["action"], as_="producer", json={"action": 5}),
    case("action-empty", "POST", RECORD, 400, ["action"], as_="producer", json={"action": ""}),
    case("action-null", "POST", RECORD, 400, ["action"], as_="producer", json={"action": None}),
    case("action-too-long", "POST", RECORD, 400, ["action"], as_="producer",
         json={"action": "x" * 300}),
    case("object-not-string", "POST", RECORD, 400, ["object"], as_="producer",
         json={"action": "X", "object": {"uri": "/x/"}}),
    case("user-agent-null", "POST", RECORD, 400, ["user_agent"], as_="producer",
         json={"action": "X", "user_agent": None}),
    case("bool-as-string", "POST", RECORD, 400, ["is_user_action"], as_="producer",
         json={"action": "X", "is_user_action": "yes"}),
    case("bool-as-int", "POST", RECORD, 400, ["can_be_canceled"], as_="producer",
         json={"action": "X", "can_be_canceled": 1}),
    case("bad-start-date", "POST", RECORD, 400, ["start_date", *DATE_WORDS], as_="producer",
         json={"action": "X", "start_date": "soon"}),
    case("bool-start-date", "POST", RECORD, 400, ["start_date"], as_="producer",
         json={"action": "X", "start_date": True}),
    case("start-date-huge", "POST", RECORD, 400, ["start_date", "range"], as_="producer",
         json={"action": "X", "start_date": 99999999999999999999}),
    case("start-date-huge-float", "POST", RECORD, 400, ["start_date", "range"], as_="producer",
         json={"action": "X", "start_date": 1e300}),
    case("end-date-huge", "POST", RECORD, 400, ["end_date", "range"], as_="producer",
         json={"action": "X", "state": "Success", "end_date": 10**20}),
    case("nan-is-not-json", "POST", RECORD, 400, ["NaN"], as_="producer",
         data='{"action": "X", "start_date": NaN}', headers={"Content-Type": "application/json"}),
    case("infinity-is-not-json", "POST", RECORD, 400, ["Infinity"], as_="producer",
         data='{"action": "X", "body": Infinity}', headers={"Content-Type": "application/json"}),
    case("lone-surrogate", "POST", RECORD, 400, ["surrogate"], as_="producer",
         data='{"action": "X\\ud800"}', headers={"Content-Type": "application/json"}),
    case("nested-too-deeply", "POST", RECORD, 400, ["nested"], as_="producer",
         data="[" * 100_000, headers={"Content-Type": "application/json"}),
    case("body-nested-too-deeply", "POST", RECORD, 400, ["nested"], as_="producer",
         data='{"action": "X", "body": ' + "[" * 5000 + "]" * 5000 + "}",
         headers={"Content-Type": "application/json"}),
    case("parents-not-list", "POST", RECORD, 400, ["parents"], as_="producer",
         json={"action": "X", "parents": "/api/app/v1/stack/S/"}),
    case("parents-not-strings", "POST", RECORD, 400, ["parents"], as_="producer",
         json={"action": "X", "parents": [1]}),
    case("too-many-parents", "POST", RECORD, 400, ["parents"], as_="producer",
         json={"action": "X", "parents": [f"/api/app/v1/stack/{i}/" for i in range(40)]}),
    case("body-too-large", "POST", RECORD, 400, ["body"], as_="producer",
         json={"action": "X", "body": "x" * (256 * 1024 + 1)}),
    case("start-state-canceled", "POST", RECORD, 400, ["state"], as_="producer",
         json={"action": "X", "state": "Canceled"}),
    case("query-on-record", "POST", RECORD + "?dry_run=1", 400, ["dry_run"], as_="producer",
         json={"action": "X"}),
    case("text-plain-record", "POST", RECORD, 415, ["text/plain", "application/json"],
         as_="producer", data='{"action": "X"}', headers={"Content-Type": "text/plain"}),
    case("form-record", "POST", RECORD, 415, ["application/json"], as_="producer",
         data={"action": "X"}),
    case("xml-record", "POST", RECORD, 415, ["application/xml"], as_="producer",
         data="<action/>", headers={"Content-Type": "application/xml"}),
    case("oversized-request", "POST", RECORD, 413, ["too large"], as_="producer",
         data=OVERSIZED, headers={"Content-Type": "application/json"}),
]

CHANGE_CASES = [
    case("state-unknown", "PATCH", ONE, 400, ["state", "Success"], as_="producer",
         json={"state": "Done"}),
    case("state-missing", "PATCH", ONE, 400, ["state"], as_="producer", json={}),
    case("state-not-string", "PATCH", ONE, 400, ["state"], as_="producer", json={"state": 1}),
    case("state-extra-key", "PATCH", ONE, 400, ["end_date", "accepted"], as_="producer",
         json={"state": "Success", "end_date": 1}),
    case("state-list", "PATCH", ONE, 400, ["object"], as_="producer", json=["Success"]),
    case("state-malformed", "PATCH", ONE, 400, ["JSON"], as_="producer", data="{state",
         headers={"Content-Type": "application/json"}),
    case("state-refused-move", "PATCH", ONE, 400, ["In progress", "Pending"], as_="producer",
         json={"state": "Pending"}),
    case("state-text-plain", "PATCH", ONE, 415, ["application/json"], as_="producer",
         data="Success", headers={"Content-Type": "text/plain"}),
    case("logs-object", "POST", LOGS, 400, ["array"], as_="producer", json={"log": "x"}),
    case("logs-bad-item", "POST", LOGS, 400, ["lines[1]"], as_="producer", json=["a", 2]),
    case("logs-unknown-key", "POST", LOGS, 400, ["lines[0]", "text", "accepted"], as_="producer",
         json=[{"text": "a"}]),
    case("logs-bad-timestamp", "POST", LOGS, 400, ["lines[0]", "timestamp"], as_="producer",
         json=[{"log": "a", "timestamp": "now"}]),
    case("logs-timestamp-huge", "POST", LOGS, 400, ["lines[0]", "timestamp"], as_="producer",
         json=[{"log": "a", "timestamp": 10**20}]),
    case("logs-lone-surrogate", "POST", LOGS, 400, ["surrogate"], as_="producer",
         data='["\\udfff"]', headers={"Content-Type": "application/json"}),
    case("logs-malformed", "POST", LOGS, 400, ["JSON"], as_="producer", data='["a", ',
         headers={"Content-Type": "application/json"}),
    case("logs-xml", "POST", LOGS, 415, ["application/xml"], as_="producer", data="<log/>",
         headers={"Content-Type": "application/xml"}),
    case("logs-too-many", "POST", LOGS, 400, ["lines", "10000"], as_="producer",
         json=["x"] * 10_001),
    case("logs-oversized-request", "POST", LOGS, 413, ["too large"], as_="producer",
         data=OVERSIZED, headers={"Content-Type": "text/plain"}),
]

ROUTE_CASES = [
    case("delete-action", "DELETE", ONE, 405, ["DELETE", "allowed"]),
    case("put-action", "PUT", ONE, 405, ["PUT"]),
    case("put-list", "PUT", LIST, 405, ["PUT"]),
    case("delete-list", "DELETE", LIST, 405, ["DELETE"]),
    case("get-cancel", "GET", ONE + "cancel/", 405, ["GET"]),
    case("get-retry", "GET", ONE + "retry/", 405, ["GET"]),
    case("patch-logs", "PATCH", LOGS, 405, ["PATCH"]),
    case("unknown-api-path", "GET", "/api/audit/v1/nothing/here/", 404, ["/api/audit/v1/action/"]),
    case("unknown-version", "GET", "/api/audit/v2/action/", 404, ["/api/audit/v2/action/"]),
    case("unknown-subresource", "GET", ONE + "bogus/", 404, ["bogus"]),
    case("root", "GET", "/", 404, ["/api/audit/v1/action/"]),
    case("unknown-without-auth", "GET", "/nothing", 404, ["/nothing"], as_=None),
    case("not-a-uuid", "GET", "/api/audit/v1/action/not-a-uuid/", 404, ["not-a-uuid"]),
]


async def _snapshot(api, uuid):
    page = await api.list("limit=1000")
    return page["objects"], await api.read_logs(uuid)


async def _run_table(api, cases):
    action = await api.record(user="alice", state="In progress")
    await api.append(action["uuid"], ["first line"])
    before = await _snapshot(api, action["uuid"])
    problems = []
    for param in cases:
        method, path, status, words, as_, kw = param.values
        kw = dict(kw)
        if kw.get("data") is OVERSIZED:
            kw["data"] = io.BytesIO(b"x" * (8 * 1024 * 1024 + 1))
        headers = kw.pop("headers", None)
        resp = await api.request(method, path.format(uuid=action["uuid"]), as_=as_,
                                 headers=headers, **kw)
        try:
            message = await error_of(resp, status)
            missing = [w for w in words if w.lower() not in message.lower()]
            assert not missing, f"message {message!r} does not mention {missing}"
            if status == 405:
                assert resp.headers.get("Allow"), "a 405 without an Allow header"
            after = await _snapshot(api, action["uuid"])
            if after != before:
                before = after      # so that only this case is blamed
                raise AssertionError("the request changed data")
        except AssertionError as err:
            problems.append(f"{param.id}: {err}")
    assert not problems, "\n".join(problems)


async def test_bad_list_queries(api):
    await _run_table(api, LIST_CASES)


async def test_bad_records(api):
    await _run_table(api, RECORD_CASES)


async def test_bad_state_changes_and_log_appends(api):
    await _run_table(api, CHANGE_CASES)


async def test_wrong_methods_and_unknown_paths(api):
    await _run_table(api, ROUTE_CASES)


async def test_a_good_request_still_works_after_the_bad_ones(api):
    """The tables' requests are sound once fixed: the refusals are about the named problem."""
    await _run_table(api, ROUTE_CASES[:2])
    resp = await api.post(RECORD, as_="producer", json={"action": "X", "user_agent": "ua",
                                                        "parents": ["/api/app/v1/stack/S/"]})
    assert resp.status == 201
    resp = await api.post(RECORD, as_="producer", data=json.dumps({"action": "X"}),
                          headers={"Content-Type": "application/json; charset=utf-8"})
    assert resp.status == 201
