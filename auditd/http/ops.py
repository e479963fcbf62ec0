"""Operations endpoints: GET /_auditd/health and GET /_auditd/metrics (Prometheus text).

Neither needs credentials: a load balancer and a Prometheus scraper have none. They show no
action, user or namespace, only totals.

What they report is counted by the request middleware into `metrics.Metrics`.
"""
import asyncio
import json
import logging
import time

from aiohttp import web

from .. import __version__
from .appkeys import FORWARDER, METRICS, STORE, STREAMS
from .metrics import BUCKETS
from .responses import json_response

log = logging.getLogger("auditd.ops")

HEALTH_PATH = "/_auditd/health"
METRICS_PATH = "/_auditd/metrics"
HEALTH_TIMEOUT = 5.0



# ---------------------------------------------------------------------------- handlers

async def health(request: web.Request) -> web.Response:
    """200 {"status": "ok"} while the store reads and writes; else 503 {"status": "degraded"}
    with the reason, until it recovers (CONTRACT.md, the end)."""
    store = request.app[STORE]
    try:
        problem = await asyncio.wait_for(store.health(), HEALTH_TIMEOUT)
        counts = None if problem else await asyncio.wait_for(store.counts_by_state(),
                                                             HEALTH_TIMEOUT)
    except Exception as err:   # noqa: BLE001 - whatever it is, the answer is 503 with the reason
        problem = getattr(err, "message", None) or repr(err) or "no answer in time"
    if problem:
        log.warning("health check failed: %s", problem)
        return json_response({"status": "degraded", "error": problem}, status=503,
                             headers={"Cache-Control": "no-store"})
    return json_response({
        "status": "ok", "version": __version__, "schema_version": store.schema_version,
        "actions": sum(counts.values()),
        "uptime_seconds": round(time.time() - request.app[METRICS].started, 3),
    }, headers={"Cache-Control": "no-store"})


def _label(value) -> str:
    return json.dumps(str(value))   # Prometheus label escaping (\\, \", \n) matches JSON's


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    data, store = app[METRICS], app[STORE]
    try:
        counts = await store.counts_by_state()
        size = await store.database_size()
    except Exception as err:   # noqa: BLE001 - the scrape still answers with what it knows
        log.warning("metrics: the database did not answer (%r)", err)
        counts, size = None, None
    out = [
        "# HELP auditd_build_info auditd's version.",
        "# TYPE auditd_build_info gauge",
        f"auditd_build_info{{version={_label(__version__)}}} 1",
        "# HELP auditd_start_time_seconds When the server started, in Unix time.",
        "# TYPE auditd_start_time_seconds gauge",
        f"auditd_start_time_seconds {data.started:.3f}",
        "# HELP auditd_http_requests_total HTTP requests answered, by method, route and status.",
        "# TYPE auditd_http_requests_total counter",
    ]
    for (method, route, status), n in sorted(data.requests.items()):
        out.append(f"auditd_http_requests_total{{method={_label(method)},route={_label(route)},"
                   f"status={_label(status)}}} {n}")
    out += ["# HELP auditd_http_request_duration_seconds Time to answer an HTTP request "
            "(WebSocket streams are not timed).",
            "# TYPE auditd_http_request_duration_seconds histogram"]
    for route, histogram in sorted(data.latency.items()):
        cumulative = 0
        for bound, n in zip((*BUCKETS, "+Inf"), histogram.counts):
            cumulative += n
            out.append(f"auditd_http_request_duration_seconds_bucket{{route={_label(route)},"
                       f"le={_label(bound)}}} {cumulative}")
        out.append(f"auditd_http_request_duration_seconds_sum{{route={_label(route)}}} "
                   f"{histogram.sum:.6f}")
        out.append(f"auditd_http_request_duration_seconds_count{{route={_label(route)}}} "
                   f"{histogram.total}")
    out += ["# HELP auditd_open_streams WebSocket streams (logs and events) open now.",
            "# TYPE auditd_open_streams gauge",
            f"auditd_open_streams {len(app[STREAMS].sockets)}",
            "# HELP auditd_commits_total Write transactions committed (one per group commit).",
            "# TYPE auditd_commits_total counter",
            f"auditd_commits_total {store.commits}"]
    if counts is not None:
        out += ["# HELP auditd_actions Actions stored, by state.",
                "# TYPE auditd_actions gauge"]
        out += [f"auditd_actions{{state={_label(state)}}} {n}" for state, n in counts.items()]
        out += ["# HELP auditd_database_size_bytes Size of the database file and its WAL.",
                "# TYPE auditd_database_size_bytes gauge",
                f"auditd_database_size_bytes {size}"]
    out += ["# HELP auditd_database_up 1 when the database answered this scrape's queries.",
            "# TYPE auditd_database_up gauge",
            f"auditd_database_up {0 if counts is None else 1}"]
    if FORWARDER in app:
        out += await app[FORWARDER].metric_lines()
    return web.Response(text="\n".join(out) + "\n", headers={"Cache-Control": "no-store"},
                        content_type="text/plain; version=0.0.4", charset="utf-8")
