"""Operations endpoints: GET /_auditd/health and GET /_auditd/metrics (Prometheus text).

Neither needs credentials: a load balancer and a Prometheus scraper have none. They show no
action, user or namespace, only totals.

The request middleware (app.py) counts every request by method, route template and status, and observes
HTTP latency per route in a fixed-bucket histogram: a dict lookup and a bisect per request.
Labels are route templates (`/api/audit/v1/action/{uuid}/`), never raw paths, so the number of
series stays fixed whatever clients send.
"""
import asyncio
import bisect
import json
import logging
import time
from collections import defaultdict

from aiohttp import web

from . import __version__, keys

log = logging.getLogger("auditd.ops")

HEALTH_PATH = "/_auditd/health"
METRICS_PATH = "/_auditd/metrics"
HEALTH_TIMEOUT = 5.0
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"      # the route label of requests no route matched (404, 405)

class Histogram:
    __slots__ = ("counts", "total", "sum")

    def __init__(self):
        self.counts = [0] * (len(BUCKETS) + 1)    # per bucket, not cumulative; last is +Inf
        self.total = 0
        self.sum = 0.0

    def observe(self, seconds: float):
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += 1
        self.sum += seconds


class Metrics:
    def __init__(self):
        self.started = time.time()
        self.requests: dict[tuple, int] = defaultdict(int)     # (method, route, status) -> n
        self.latency: dict[str, Histogram] = {}                 # route -> histogram
        self._labels: dict[int, str] = {}                       # id(resource) -> route label

    def route_label(self, request: web.Request) -> str:
        resource = request.match_info.route.resource
        if resource is None:
            return UNMATCHED
        label = self._labels.get(id(resource))
        if label is None:
            # Each API route is registered with and without its trailing slash: one label for both.
            label = resource.canonical
            if not label.endswith("/") and any(
                    r.canonical == label + "/" for r in request.app.router.resources()):
                label += "/"
            self._labels[id(resource)] = label
        return label

    def observe(self, request: web.Request, status: int, seconds: float | None):
        route = self.route_label(request)
        self.requests[(request.method, route, status)] += 1
        if seconds is not None:
            histogram = self.latency.get(route)
            if histogram is None:
                histogram = self.latency[route] = Histogram()
            histogram.observe(seconds)


METRICS = web.AppKey("metrics", Metrics)


# ---------------------------------------------------------------------------- handlers

async def health(request: web.Request) -> web.Response:
    store = request.app[keys.STORE]
    try:
        await asyncio.wait_for(store.ping(), HEALTH_TIMEOUT)
        counts = await asyncio.wait_for(store.counts_by_state(), HEALTH_TIMEOUT)
    except Exception as err:   # noqa: BLE001 - whatever it is, the answer is 503 with the reason
        reason = getattr(err, "message", None) or repr(err)
        log.warning("health check failed: %s", reason)
        return web.json_response({"status": "unavailable",
                                  "error": f"the database did not answer a query: {reason}"},
                                 status=503, headers={"Cache-Control": "no-store"})
    return web.json_response({
        "status": "ok", "version": __version__, "schema_version": store.schema_version,
        "actions": sum(counts.values()),
        "uptime_seconds": round(time.time() - request.app[METRICS].started, 3),
    }, headers={"Cache-Control": "no-store"})


def _label(value) -> str:
    return json.dumps(str(value))   # Prometheus label escaping (\\, \", \n) matches JSON's


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    data, store = app[METRICS], app[keys.STORE]
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
            f"auditd_open_streams {len(app[keys.STREAMS].sockets)}",
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
    return web.Response(text="\n".join(out) + "\n", headers={"Cache-Control": "no-store"},
                        content_type="text/plain; version=0.0.4", charset="utf-8")


def setup(app: web.Application):
    """Add the health and metrics routes; app.request_middleware counts into app[METRICS]."""
    app[METRICS] = Metrics()
    app.router.add_get(HEALTH_PATH, health)
    app.router.add_get(METRICS_PATH, metrics)
