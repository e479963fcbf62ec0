"""Bounds on what one client can make the server do or hold.

- `RateLimiter`: per-user token buckets for what a low-privilege account can multiply (retries,
  each of which records a new action; cancels). Past the rate: 429 with Retry-After.
- `BodyBudget`: the bytes of request bodies being read and parsed at once, across all clients.
  Past it: 503 with Retry-After, before any byte of the body is read.
"""
import time

from ..model.errors import Busy, TooManyRequests

MAX_TRACKED_USERS = 10_000
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class RateLimiter:
    """`per_minute` operations a minute per user, with a burst of as many (0: no limit)."""

    def __init__(self, what: str, per_minute: int):
        self.what, self.per_minute = what, per_minute
        self.buckets: dict[str, tuple[float, float]] = {}    # user -> (tokens, when)

    def take(self, user: str):
        if not self.per_minute:
            return
        now = time.monotonic()
        rate = self.per_minute / 60.0
        tokens, when = self.buckets.get(user, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - when) * rate)
        if tokens < 1:
            raise TooManyRequests(
                f"too many {self.what}: at most {self.per_minute} a minute per user; retry in "
                f"{(1 - tokens) / rate:.0f} s", (1 - tokens) / rate)
        if len(self.buckets) >= MAX_TRACKED_USERS and user not in self.buckets:
            self.buckets.clear()   # only full buckets would be forgotten after a minute anyway
        self.buckets[user] = (tokens - 1, now)


class BodyBudget:
    """Request-body bytes in flight, bounded: `reserve(n)` or Busy; `release(n)` when done."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def reserve(self, size: int):
        if self.used and self.used + size > self.limit:
            raise Busy(f"the server is reading {self.used:,} bytes of request bodies already "
                       f"(its bound is {self.limit:,}): retry in a second")
        self.used += size

    def release(self, size: int):
        self.used -= size


class Limits:
    """The server's bounds, from its configuration."""

    def __init__(self, config):
        self.retries = RateLimiter("retries", config.retry_limit)
        self.cancels = RateLimiter("cancels", config.cancel_limit)
        self.bodies = BodyBudget(config.max_inflight_bytes)
        self.max_body = config.max_body_bytes

    def body_size(self, request) -> int:
        """What a request's body may take: its length, or the most a body may be."""
        if request.method not in BODY_METHODS:
            return 0
        length = request.content_length
        if length is None:
            return self.max_body if request.body_exists else 0
        return min(length, self.max_body)
