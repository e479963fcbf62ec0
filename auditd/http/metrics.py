"""What the request middleware counts for /_auditd/metrics: every request by method, route
template and status, and HTTP latency per route in a fixed-bucket histogram (a dict lookup and a
bisect per request). Labels are route templates (`/api/audit/v1/action/{uuid}/`), never raw paths,
so the number of series stays fixed whatever clients send."""
import bisect
import time
from collections import defaultdict

from aiohttp import web

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
