"""GET /_auditd/health and GET /_auditd/metrics, read the way a load balancer and Prometheus do."""
import os
import re

from conftest import basic

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict:
    """{(name, frozenset(labels)): value}; every line must be a comment or a valid sample."""
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-z_]+ ", line), line
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample: {line!r}"
        name, labels, value = match.groups()
        label_pairs = frozenset(LABEL.findall(labels or ""))
        samples[(name, label_pairs)] = float(value)
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


async def scrape(api) -> dict:
    resp = await api.client.get("/_auditd/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    return parse(await resp.text())


async def test_health_needs_no_credentials_and_queries_the_database(api):
    await api.record(user="alice")
    resp = await api.client.get("/_auditd/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ok" and body["actions"] == 1 and body["schema_version"] >= 1


async def test_health_is_503_when_the_database_cannot_be_queried(api):
    await api.store.close()
    resp = await api.client.get("/_auditd/health")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "degraded" and "database" in body["error"]


async def test_metrics_count_requests_by_route_template_and_status(api):
    created = await api.record(user="alice")
    await api.record(user="bob")
    await api.set_state(created["uuid"], "Success")
    missing = "6f1b3e2c-0000-4000-8000-000000000000"
    assert (await api.get(f"/api/audit/v1/action/{missing}/")).status == 404
    assert (await api.get("/api/audit/v1/action/", as_=None)).status == 401
    assert (await api.get("/api/audit/v1/action")).status == 200       # no trailing slash
    assert (await api.get("/api/audit/v1/action/")).status == 200
    assert (await api.client.get("/no/such/path")).status == 404

    samples = await scrape(api)
    requests = "auditd_http_requests_total"
    assert value(samples, requests, method="POST", route="/api/audit/v1/action/",
                 status="201") == 2
    assert value(samples, requests, method="PATCH", route="/api/audit/v1/action/{uuid}/",
                 status="200") == 1
    assert value(samples, requests, method="GET", route="/api/audit/v1/action/{uuid}/",
                 status="404") == 1
    assert value(samples, requests, method="GET", route="/api/audit/v1/action/",
                 status="401") == 1
    assert value(samples, requests, method="GET", route="/api/audit/v1/action/",
                 status="200") == 2
    assert value(samples, requests, method="GET", route="unmatched", status="404") == 1
    text = (await (await api.client.get("/_auditd/metrics")).text())
    assert missing not in text and created["uuid"] not in text and "/no/such" not in text


async def test_latency_histogram_is_cumulative_and_matches_the_count(api):
    for _ in range(3):
        await api.list()
    samples = await scrape(api)
    route = "/api/audit/v1/action/"
    buckets = sorted(((float(dict(labels)["le"]), n) for (name, labels), n in samples.items()
                      if name == "auditd_http_request_duration_seconds_bucket"
                      and dict(labels)["route"] == route))
    counts = [n for _, n in buckets]
    assert counts == sorted(counts) and buckets[-1][0] == float("inf")
    assert buckets[-1][1] == value(samples, "auditd_http_request_duration_seconds_count",
                                   route=route) == 3
    assert value(samples, "auditd_http_request_duration_seconds_sum", route=route) > 0


async def test_metrics_show_actions_by_state_streams_and_database_size(api):
    first = await api.record(user="alice")
    await api.record(user="alice")
    await api.set_state(first["uuid"], "Failed")
    async with api.client.ws_connect("/api/audit/v1/events/",
                                     headers=basic("admin", api.keys["admin"])) as ws:
        assert (await ws.receive_json())["type"] == "auth"
        samples = await scrape(api)
    assert value(samples, "auditd_open_streams") == 1
    assert value(samples, "auditd_actions", state="Failed") == 1
    assert value(samples, "auditd_actions", state="In progress") == 1
    assert value(samples, "auditd_actions", state="Success") == 0
    if hasattr(api.store, "path"):
        # The pages SQLite counts (main file, with what the WAL adds) plus the WAL file itself.
        assert value(samples, "auditd_database_size_bytes") >= os.path.getsize(api.store.path) > 0
    else:   # PostgreSQL: pg_database_size
        assert value(samples, "auditd_database_size_bytes") > 0
    assert value(samples, "auditd_database_up") == 1
