"""Token-bucket rate limits and their headers (IETF draft-ietf-httpapi-ratelimit-headers).

Policies (requests per minute, each configurable under ``[security.rate_limits]``):

    anonymous   per client IP: requests without a valid credential, failed ones included
    key         per credential (API key, API_KEY_SECRET; uid on the Unix socket), and per
                session for session tokens (all tokens of a session share one bucket)
    websocket   per client IP: WebSocket connection attempts

A bucket holds ``limit`` tokens and refills continuously at ``limit`` per 60 s, so a client
can burst its whole minute and then goes on at the steady rate. Every limited response
carries

    RateLimit-Policy: "anonymous";q=100;w=60
    RateLimit: "anonymous";r=42;t=35

``r`` is what is left, ``t`` the seconds until the bucket is full again; a refused request
gets ``429`` with ``Retry-After`` (seconds until the next token).

A bucket that is full again is the same as none, so it is forgotten: the buckets are kept in
order of last use, and every hit first drops the least recently used ones while they are full
(at least one hit of work each, so amortised O(1) however many client addresses there are; a
bucket unused for a whole window is always full). Memory is held to the keys seen in the
last minute.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

WINDOW = 60.0
# Float slack, so 0.6 s at 100/min is one whole token, not 0.9999999.
EPSILON = 1e-9


@dataclass
class Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True)
class Decision:
    policy: str
    limit: int
    allowed: bool
    remaining: int
    reset: int  # seconds until full
    retry_after: int  # seconds until one token (0 when allowed)

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Policy": f'"{self.policy}";q={self.limit};w={int(WINDOW)}',
            "RateLimit": f'"{self.policy}";r={self.remaining};t={self.reset}',
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class RateLimiter:
    """All buckets of one daemon. ``clock`` is injectable so tests count, never sleep."""

    def __init__(self, limits: dict[str, int], clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        # least recently used first: every hit moves its bucket to the end
        self._buckets: OrderedDict[tuple[str, str], Bucket] = OrderedDict()

    def enabled(self, policy: str) -> bool:
        return self.limits.get(policy, 0) > 0

    @staticmethod
    def _level(bucket: Bucket, limit: int, now: float) -> float:
        """The bucket's tokens at ``now``, uncapped: elapsed * limit / WINDOW (not elapsed *
        rate), so a whole window refills exactly."""
        return bucket.tokens + (now - bucket.updated) * limit / WINDOW

    def _refill(self, bucket: Bucket, limit: int, now: float) -> None:
        bucket.tokens = min(float(limit), self._level(bucket, limit, now))
        bucket.updated = now

    def hit(self, policy: str, key: str, cost: float = 1.0) -> Decision | None:
        """Take ``cost`` tokens from the (policy, key) bucket; None when the policy is off."""
        limit = self.limits.get(policy, 0)
        if limit <= 0:
            return None
        now = self.clock()
        self._forget_full(now)
        bucket = self._buckets.get((policy, key))
        if bucket is None:
            bucket = self._buckets[(policy, key)] = Bucket(float(limit), now)
        else:
            self._refill(bucket, limit, now)
            self._buckets.move_to_end((policy, key))
        rate = limit / WINDOW
        allowed = bucket.tokens + EPSILON >= cost
        if allowed:
            bucket.tokens -= cost
        retry = 0 if allowed else max(1, math.ceil((cost - bucket.tokens - EPSILON) / rate))
        return Decision(
            policy=policy,
            limit=limit,
            allowed=allowed,
            remaining=max(0, int(bucket.tokens + EPSILON)),
            reset=max(0, math.ceil((limit - bucket.tokens - EPSILON) / rate)),
            retry_after=retry,
        )

    def peek(self, policy: str, key: str) -> Decision | None:
        """The bucket's state without taking a token (for headers on unlimited paths)."""
        return self.hit(policy, key, cost=0.0)

    def __len__(self) -> int:
        """How many buckets are held."""
        return len(self._buckets)

    def _forget_full(self, now: float) -> None:
        """Drop the least recently used buckets while they are full again (or their policy is
        off); stops at the first one that is not."""
        while self._buckets:
            (policy, _key), bucket = next(iter(self._buckets.items()))
            limit = self.limits.get(policy, 0)
            if limit > 0 and self._level(bucket, limit, now) + EPSILON < limit:
                return
            self._buckets.popitem(last=False)
