"""A command's retry policy, from its metadata or the ``commands.retry_defaults`` setting.

    metadata.retries   how many times a failed attempt is tried again (0 to 100)
    metadata.backoff   "fixed" | "exponential" | {"type": ..., "base": s, "cap": s}
                       (default exponential, base 1 s, cap 300 s)
    metadata.retry_on  error codes to retry on (default: any failed or timed-out attempt)

Pure: no store, no runner (``records.validate`` checks a submission's policy with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmgine_daemon.bus.errors import invalid
from llmgine_daemon.protocol.bus import MAX_RETRIES, MAX_RETRY_DELAY_S, MAX_RETRY_ON
from llmgine_daemon.protocol.integral import whole

MAX_DELAY_S = MAX_RETRY_DELAY_S
KEYS = ("retries", "backoff", "retry_on")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int
    backoff: str = "exponential"
    base: float = 1.0
    cap: float = 300.0
    retry_on: frozenset[str] = frozenset()

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1 = the first)."""
        if self.backoff == "fixed":
            return min(self.base, self.cap)
        return min(self.cap, self.base * 2 ** (attempt - 1))

    def retries_on(self, code: str | None) -> bool:
        return not self.retry_on or code in self.retry_on


def _seconds(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_DELAY_S:
        raise invalid(field, f"must be a number of seconds from 0 to {MAX_DELAY_S:g}")
    return float(value)


def has_policy(metadata: dict[str, Any]) -> bool:
    return "retries" in metadata or "backoff" in metadata or "retry_on" in metadata


def parse_policy(metadata: dict[str, Any], prefix: str = "metadata.") -> RetryPolicy:
    """The policy the keys of ``metadata`` describe; VALIDATION_ERROR naming the field."""
    retries = whole(metadata.get("retries", 0))  # 3.0 is 3, as pydantic and JSON Schema take it
    if retries is None or not 0 <= retries <= MAX_RETRIES:
        raise invalid(f"{prefix}retries", f"must be an integer from 0 to {MAX_RETRIES}")
    backoff = metadata.get("backoff", "exponential")
    base, cap = 1.0, 300.0
    if isinstance(backoff, dict):
        unknown = set(backoff) - {"type", "base", "cap"}
        if unknown:
            raise invalid(f"{prefix}backoff", f"unknown key {sorted(unknown)[0]!r} (type, base, cap)")
        base = _seconds(backoff.get("base", base), f"{prefix}backoff.base")
        cap = _seconds(backoff.get("cap", cap), f"{prefix}backoff.cap")
        backoff = backoff.get("type", "exponential")
    if backoff not in ("fixed", "exponential"):
        raise invalid(f"{prefix}backoff", "must be fixed, exponential or {type, base, cap}")
    retry_on = metadata.get("retry_on", [])
    if (
        not isinstance(retry_on, list)
        or len(retry_on) > MAX_RETRY_ON
        or not all(isinstance(c, str) and 0 < len(c) <= 64 for c in retry_on)
    ):
        raise invalid(f"{prefix}retry_on", f"must be a list of at most {MAX_RETRY_ON} error codes")
    return RetryPolicy(retries, backoff, base, cap, frozenset(retry_on))
