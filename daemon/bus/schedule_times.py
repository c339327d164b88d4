"""When a schedule fires: a cron expression (croniter, imported only here and only when a cron
schedule is checked or computed), a fixed interval (``every``), or once (``at``), in an IANA
time zone (zoneinfo). Times come in and go out as aware datetimes; the store keeps ISO UTC.

    parse(body fields) -> When        validated; a bad one is 422 naming the field
    When.first(now)                   the first firing after ``now`` (None: there is none: an
                                      ``at`` in the past, a cron expression naming no date
                                      that exists, such as "0 0 31 2 *")
    When.following(due, now)          the next firing after ``due`` that is later than ``now``
                                      (late firings are coalesced into the one that fires;
                                      None: there is none)
    When.upcoming(due, n)             ``due`` and the n-1 firings after it (for display)
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from llmgine_daemon.bus.errors import invalid
from llmgine_daemon.protocol import to_iso

MIN_EVERY_S = 1.0
MAX_EVERY_S = 366 * 86400.0
MAX_SPEC = 200
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.I)


def zone(name: str) -> ZoneInfo:
    try:
        if not name or len(name) > 64 or ".." in name or name.startswith("/"):
            raise ValueError
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise invalid("timezone", "not a known IANA time zone (e.g. UTC, Europe/Berlin)", value=name[:64]) from None


def parse_every(value: float | str) -> float:
    if isinstance(value, str):
        match = _EVERY.match(value)
        if match is None:
            raise invalid("every", 'seconds, or a number with a unit s, m, h, d or w ("90s", "5m", "1d")')
        seconds = float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]
    else:
        seconds = float(value)
    if not (math.isfinite(seconds) and MIN_EVERY_S <= seconds <= MAX_EVERY_S):
        raise invalid("every", f"must be from {MIN_EVERY_S:g} second to {MAX_EVERY_S / 86400:g} days")
    return seconds


def _croniter() -> Any:
    from croniter import croniter  # not on the CLI's path, nor the daemon's unless cron is used

    return croniter


@dataclass(frozen=True)
class When:
    kind: str  # cron | every | at
    spec: str  # the cron expression, the interval in seconds, the ISO time (UTC)
    tz: ZoneInfo

    @property
    def interval(self) -> float:
        return float(self.spec)

    def _cron_next(self, after: dt.datetime) -> dt.datetime | None:
        """The next firing, or None if croniter finds none (it looks 50 years ahead: a valid
        expression may name only dates that do not exist, "0 0 31 2 *")."""
        from croniter import CroniterError

        it = _croniter()(self.spec, after.astimezone(self.tz))
        try:
            value: dt.datetime = it.get_next(dt.datetime)
        except CroniterError:
            return None
        return value.astimezone(dt.UTC)

    def first(self, now: dt.datetime) -> dt.datetime | None:
        if self.kind == "cron":
            return self._cron_next(now)
        if self.kind == "every":
            return now + dt.timedelta(seconds=self.interval)
        at = dt.datetime.fromisoformat(self.spec.replace("Z", "+00:00"))
        return at if at > now else None

    def following(self, due: dt.datetime, now: dt.datetime) -> dt.datetime | None:
        if self.kind == "at":
            return None
        if self.kind == "every":
            step = self.interval
            behind = max(0.0, (now - due).total_seconds())
            return due + dt.timedelta(seconds=step * (math.floor(behind / step) + 1))
        return self._cron_next(max(due, now))

    def upcoming(self, due: dt.datetime | None, n: int = 3) -> list[dt.datetime]:
        out: list[dt.datetime] = []
        while due is not None and len(out) < n:
            out.append(due)
            due = self.following(due, due)
        return out


def parse(cron: str | None, every: float | str | None, at: str | None, timezone: str) -> When:
    """The one of cron/every/at given, checked (422 naming the field otherwise)."""
    given = [name for name, value in (("cron", cron), ("every", every), ("at", at)) if value is not None]
    if len(given) != 1:
        raise invalid("cron", "give exactly one of cron, every and at", given=given)
    tz = zone(timezone)
    if cron is not None:
        text = " ".join(cron.split())
        if not text or len(text) > MAX_SPEC:
            raise invalid("cron", f"a cron expression of 5 or 6 fields, at most {MAX_SPEC} characters")
        croniter = _croniter()
        if len(text.split()) not in (5, 6) or not croniter.is_valid(text):
            raise invalid(
                "cron", 'not a valid cron expression (5 fields: minute hour day month weekday, e.g. "*/5 * * * *")'
            )
        return When("cron", text, tz)
    if every is not None:
        return When("every", repr(parse_every(every)), tz)
    assert at is not None
    try:
        text = at.strip()
        # RFC 3339's spellings: a lower-case z too (protocol.parse_iso); none: in timezone.
        moment = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
    except ValueError:
        raise invalid("at", "an ISO 8601 time, e.g. 2030-01-01T09:00:00 (in timezone) or ...Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return When("at", to_iso(moment), tz)  # said as every time in an answer: ...Z
