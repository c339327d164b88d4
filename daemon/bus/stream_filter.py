"""Stream filters: which events a subscriber wants, as a Python predicate (live delivery)
and as the same predicate in SQL (replay from the store). Used by bus/streams.py."""

from __future__ import annotations

from typing import Any

from llmgine_daemon.bus.errors import invalid
from llmgine_daemon.protocol import EVENT_SOURCES, Event

MAX_PATTERNS = 32
MAX_PATTERN_LENGTH = 200

SESSION_ENDED = "SessionEnded"


class StreamFilter:
    """Which events a subscriber wants: one session (or all), event types, sources.

    ``event_types`` entries are exact names or prefixes ending in ``*`` (``Command*``; ``*``
    alone is everything). An empty tuple means every type (every source). A session stream
    always receives its session's SessionEnded, whatever the filter: it is how the stream
    says it is over.
    """

    __slots__ = ("session_id", "event_types", "sources", "_exact", "_prefixes", "_all_types")

    def __init__(
        self,
        session_id: str | None = None,
        event_types: tuple[str, ...] | list[str] = (),
        sources: tuple[str, ...] | list[str] = (),
    ) -> None:
        self.session_id = session_id
        self.event_types = tuple(dict.fromkeys(event_types))
        self.sources = tuple(dict.fromkeys(sources))
        for name, values in (("event_type", self.event_types), ("source", self.sources)):
            if len(values) > MAX_PATTERNS:
                raise invalid(name, f"at most {MAX_PATTERNS} values")
            for value in values:
                if not value or len(value) > MAX_PATTERN_LENGTH:
                    raise invalid(name, f"must be 1 to {MAX_PATTERN_LENGTH} characters")
        for pattern in self.event_types:
            if "*" in pattern[:-1]:
                raise invalid("event_type", "'*' is allowed only at the end", value=pattern[:64])
        # Types are free text here: user code may publish any type of 1-128 characters
        # (bus/usercode_bridge.py), and a stream must be able to follow it. Sources are a set.
        for source in self.sources:
            if source not in EVENT_SOURCES:
                raise invalid("source", f"must be one of {', '.join(EVENT_SOURCES)}", value=source[:64])
        self._exact = frozenset(p for p in self.event_types if not p.endswith("*"))
        self._prefixes = tuple(p[:-1] for p in self.event_types if p.endswith("*"))
        self._all_types = not self.event_types or "" in self._prefixes

    def with_types(self, event_types: list[str] | None, sources: list[str] | None) -> StreamFilter:
        return StreamFilter(
            self.session_id,
            self.event_types if event_types is None else event_types,
            self.sources if sources is None else sources,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "event_types": list(self.event_types),
            "sources": list(self.sources),
        }

    def matches(self, event: Event) -> bool:
        if self.session_id is not None:
            if event.session_id != self.session_id:
                return False
            if event.event_type == SESSION_ENDED:
                return True
        if self.sources and event.source not in self.sources:
            return False
        if self._all_types or event.event_type in self._exact:
            return True
        return any(event.event_type.startswith(p) for p in self._prefixes)

    def sql(self) -> tuple[str, list[Any]]:
        """The same predicate as ``matches``, as a WHERE fragment for the replay query."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.sources:
            clauses.append(f"source IN ({','.join('?' * len(self.sources))})")
            params.extend(self.sources)
        if not self._all_types:
            ors: list[str] = []
            if self._exact:
                ors.append(f"event_type IN ({','.join('?' * len(self._exact))})")
                params.extend(sorted(self._exact))
            for prefix in self._prefixes:
                # substr, not LIKE: LIKE is case-insensitive and treats _ and % as wildcards.
                ors.append("substr(event_type, 1, ?) = ?")
                params.extend((len(prefix), prefix))
            clauses.append(f"({' OR '.join(ors)})")
        where = " AND ".join(clauses) if clauses else "1 = 1"  # (a boolean on PostgreSQL too)
        if self.session_id is not None:
            where = f"session_id = ? AND ({where} OR event_type = ?)"
            params = [self.session_id, *params, SESSION_ENDED]
        return where, params
