"""The OpenAPI document (GET /api/audit/v1/openapi.json), and schemathesis against a real server.

- The served document is the checked-in docs/openapi.json, needs no credentials, and names every
  route the server has.
- schemathesis fuzzes every REST operation (positive and negative data, its coverage cases, and
  methods a path does not take) and sends each case as each role: no answer is a 5xx, and every
  status, content type, header and body is one the document declares. Then stateful chains
  follow the document's links from a recorded action (get, patch, cancel, retry, append logs).
- The WebSocket routes are excluded from the fuzzing; their handshake errors and messages are
  checked against the document here with real WebSockets.

Run time: under a minute on two cores (MAX_EXAMPLES per operation, a fixed seed).
"""
import asyncio
import json
import os
import urllib.error
import urllib.request

import aiohttp
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import Flaky

from auditd.config import Config
from auditd.http import openapi
from auditd.http.app import create_app
from conftest import ROOT, ServerProcess, basic

CHECKED_IN = ROOT / "docs" / "openapi.json"
REGENERATE = "python -m auditd.http.openapi > docs/openapi.json"
ROLES = {"admin": "admin", "ci": "producer", "alice": "user"}
# More for a deeper run: OPENAPI_EXAMPLES=500 pytest tests/test_openapi.py
MAX_EXAMPLES = int(os.environ.get("OPENAPI_EXAMPLES", 25))
STATEFUL_EXAMPLES = 60 * MAX_EXAMPLES // 25
DOCUMENT = openapi.build()
RAN = set()   # which schemathesis runs this session made (the last test checks their reach)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    # rate limits high enough for chains of retries; their 429 is tested in test_hostile.py
    srv = ServerProcess(tmp_path_factory.mktemp("fuzz") / "fuzz.db",
                        ["--retry-limit", "100000", "--cancel-limit", "100000"]).start()
    srv.keys = {"admin": srv.admin_key}
    for name, role in ROLES.items():
        if name != "admin":
            done = srv.cli("user", "add", name, "--role", role)
            assert done.returncode == 0, done.stderr
            srv.keys[name] = done.stdout.strip()
    yield srv
    srv.stop()


# The document as the server makes it (the first test below proves it is the one
# served). Streams are WebSockets: their handshakes are tested apart.
CONFIG = schemathesis.Config.from_dict({
    "seed": 20261101,
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
    # The document cannot say everything that makes a request valid (which strings are dates,
    # include_related only with object, end_date only with a final state), so a schema-valid
    # request may still be a 400. Schema-violating ones must all be refused (negative data).
    "checks": {"positive_data_acceptance": {"enabled": False}},
})


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    """The seed's NDJSON: the document's array of items, one JSON value a line."""
    items = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


schema = schemathesis.openapi.from_dict(openapi.build(), config=CONFIG).exclude(tag="streams")


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_as_every_role(case, fuzz_server):
    RAN.add("fuzz")
    for name in ROLES:
        case.call_and_validate(base_url=fuzz_server.url,
                               headers=basic(name, fuzz_server.keys[name]))



# Stateful: chains that follow the document's links (record, then get, patch, cancel, retry or
# append logs by the uuid the answer carries). As a user there is nothing to chain: it may not
# record.
chained = schema.include(tag=["actions", "producer"])


@pytest.mark.parametrize("name", ["ci", "admin"])
def test_linked_operations(fuzz_server, name):
    RAN.add(name)
    machine = chained.as_state_machine()
    headers = basic(name, fuzz_server.keys[name])
    failures = []

    class Workflow(machine):
        def get_call_kwargs(self, case):
            return {"base_url": fuzz_server.url, "headers": headers}

        def validate_response(self, response, case, *args, **kwargs):
            try:
                super().validate_response(response, case, *args, **kwargs)
            except Exception as err:
                failures.append(err)
                raise

    try:
        Workflow.run(settings=settings(
            max_examples=STATEFUL_EXAMPLES, stateful_step_count=8, deadline=None,
            derandomize=True, database=None, suppress_health_check=list(HealthCheck),
            # no shrinking: a replay against a server whose data has moved on is another run
            phases=[Phase.explicit, Phase.generate]))
    except Flaky:
        # Which links a step can follow depends on the server's earlier answers, so Hypothesis
        # may find a run's choices inconsistent and stop it early (schemathesis' own runner
        # counts that as no failure too). A check that failed before that still fails the test.
        if failures:
            raise failures[0] from None



# ---------------------------------------------------------------------------- the document

def test_served_document_is_the_checked_in_one_without_credentials(fuzz_server):
    with urllib.request.urlopen(fuzz_server.url + openapi.PATH) as response:   # no credentials
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        served = response.read().decode("utf-8")
    assert json.loads(served) == DOCUMENT
    assert served == CHECKED_IN.read_text(encoding="utf-8"), (
        f"docs/openapi.json differs from the document the server serves: regenerate it with "
        f"`{REGENERATE}` and commit it")
    assert DOCUMENT["openapi"].startswith("3.")


def test_every_route_is_in_the_document(tmp_path):
    app = create_app(Config(db=str(tmp_path / "routes.db")))
    documented = {(path, method.upper()) for path, item in DOCUMENT["paths"].items()
                  for method in item if method != "parameters"}
    missing = set()
    for route in app.router.routes():
        path = route.resource.canonical
        if route.method == "HEAD" or path == "/" or path.startswith(("/ui/static", "/ui/action")) \
                or path in ("/ui", "/ui/"):
            continue          # HEAD of a GET; the console's HTML pages and files
        if (path, route.method) not in documented and (path + "/", route.method) not in documented:
            missing.add((route.method, path))
    assert missing == set()
    statuses = {status for item in DOCUMENT["paths"].values() for op in item.values()
                if isinstance(op, dict) for status in op.get("responses", {})}
    assert {"101", "400", "401", "403", "404", "409", "413", "415", "429", "503"} <= statuses
    assert "405" in DOCUMENT["components"]["responses"]





def test_statuses_the_fuzzing_does_not_reach_are_as_documented(fuzz_server):
    """A body over max_body_bytes (413) and a method a path does not take (405)."""
    admin = basic("admin", fuzz_server.keys["admin"])
    big = b'{"action": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    cases = [("POST", "/api/audit/v1/action/", big, "application/json", 413, "recordAction"),
             ("POST", "/_auditd/seed/", big, "application/json", 413, "seed"),
             ("DELETE", "/api/audit/v1/action/", None, None, 405, None)]
    for method, path, body, content_type, status, operation_id in cases:
        headers = {**admin, **({"Content-Type": content_type} if content_type else {})}
        request = urllib.request.Request(fuzz_server.url + path, body, headers, method=method)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request)
        with err.value as answer:
            assert answer.code == status, answer.read()
            assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
            jsonschema_rs.validate(component("Error"), json.loads(answer.read()))
            if operation_id:
                assert str(status) in documented(operation_id)
            else:
                assert answer.headers["Allow"] and "405" in DOCUMENT["components"]["responses"]



# ---------------------------------------------------------------------------- WebSockets

def component(name: str) -> dict:
    return DOCUMENT["components"]["schemas"][name]


def documented(operation_id: str) -> set:
    for item in DOCUMENT["paths"].values():
        for op in item.values():
            if isinstance(op, dict) and op.get("operationId") == operation_id:
                return set(op["responses"])
    raise KeyError(operation_id)


HANDSHAKE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
             "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


def handshake(url: str, headers: dict) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers={**HANDSHAKE, **headers})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, dict(response.headers), b""
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


def test_websocket_handshake_errors_are_documented(fuzz_server):
    admin = basic("admin", fuzz_server.keys["admin"])
    unknown = "00000000-0000-4000-8000-000000000000"
    cases = [
        ("streamLogs", f"/api/audit/v1/action/{unknown}/logs/", admin, 404),
        ("streamLogsNoApi", f"/audit/v1/action/{unknown}/logs/", admin, 404),
        ("streamLogsInNamespace", f"/api/audit/v1/nobody/action/{unknown}/logs/",
         basic("alice", fuzz_server.keys["alice"]), 404),
        ("streamEvents", "/api/audit/v1/events/", {}, 401),
        ("streamEvents", "/api/audit/v1/events/?user=admin&token=wrong", {}, 401),
        ("streamEvents", "/api/audit/v1/events/?ticket=made-up", {}, 401),
        ("streamEvents", "/api/audit/v1/events/?since=1", admin, 400),
        ("streamEvents", "/api/audit/v1/events/", {**admin, "Origin": "http://evil.example"}, 403),
        ("streamEventsInNamespace", "/api/audit/v1/nobody/events/",
         basic("alice", fuzz_server.keys["alice"]), 404),
    ]
    for operation_id, path, headers, status in cases:
        got, answer_headers, body = handshake(fuzz_server.url + path, headers)
        assert got == status, (path, got, body)
        assert str(got) in documented(operation_id), (operation_id, got)
        jsonschema_rs.validate(component("Error"), json.loads(body))
        if got == 401:
            assert answer_headers["WWW-Authenticate"] == 'Basic realm="auditd"'
    # a plain GET (no upgrade) is a 400 too
    request = urllib.request.Request(fuzz_server.url + "/api/audit/v1/events/", headers=admin)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request)
    with err.value:
        assert err.value.code == 400 and "400" in documented("streamEvents")


def test_websocket_messages_match_their_schemas(fuzz_server):
    async def scenario():
        headers = basic("ci", fuzz_server.keys["ci"])
        async with aiohttp.ClientSession(fuzz_server.url, headers=headers) as http:
            async with http.ws_connect("/api/audit/v1/events/") as events:
                first = await events.receive_json(timeout=10)
                async with http.post("/api/audit/v1/action/", json={
                        "action": "Service Create", "object": "/api/app/v1/service/web/",
                        "parents": ["/api/app/v1/stack/shop/"]}) as resp:
                    assert resp.status == 201
                    uuid = (await resp.json())["uuid"]
                event = await events.receive_json(timeout=10)
            async with http.post(f"/api/audit/v1/action/{uuid}/logs/", json=[
                    "plain", {"log": "typed", "timestamp": 1700000000, "streamType": "stderr"}]):
                pass
            async with http.ws_connect(f"/audit/v1/action/{uuid}/logs/?follow=false") as logs:
                lines = [json.loads(m.data) async for m in logs]
                assert logs.close_code == 1000
        return first, event, lines

    first, event, lines = asyncio.run(scenario())
    jsonschema_rs.validate(component("AuthMessage"), first)
    jsonschema_rs.validate(component("ActionEvent"), event)
    assert [line["log"] for line in lines] == ["plain", "typed"]
    for line in lines:
        jsonschema_rs.validate(component("LogMessage"), line)
    # and a message that is not one is refused: the schemas say something
    assert not jsonschema_rs.is_valid(component("LogMessage"), {"type": "log", "log": 1})


def test_the_fuzzing_reached_every_operation_and_never_a_5xx(fuzz_server):
    """A cross-check from the server's own counters, after the runs above: no request of the
    whole module got a 5xx, and every fuzzed operation of the Actions and producer API answered
    a 2xx at least once (so the runs reached the handlers, not only the 4xx before them)."""
    if RAN != {"fuzz", "ci", "admin"}:
        pytest.skip("this checks what the schemathesis tests above did: run the whole module")
    with urllib.request.urlopen(fuzz_server.url + "/_auditd/metrics") as response:
        text = response.read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith("auditd_http_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            fields = dict(part.split("=", 1) for part in labels[27:-1].split(","))
            key = (json.loads(fields["method"]), json.loads(fields["route"]),
                   json.loads(fields["status"]))
            counts[key] = int(value)
    assert not [k for k in counts if k[2].startswith("5")], counts
    ok = {(method, route) for method, route, status in counts if status.startswith("2")}
    expected = {(method.upper(), path) for path, item in DOCUMENT["paths"].items()
                for method, op in item.items() if method != "parameters"
                and set(op.get("tags", ())) & {"actions", "producer"}
                and "{namespace}" not in path}
    assert expected - ok == set()
