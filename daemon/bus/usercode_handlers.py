"""User-code handlers (spec section 6): Python functions registered over the API, run in the
sandbox. (``bus/handler_registry.py`` is the in-process command handler registry they plug into;
this module is the ``/api/.../handlers`` resource: persistence, dispatch, scopes.)

- Command handlers: one per command type per scope (a session, or global = LLMGine's BUS
  scope; the session's wins). Each is registered in ``bus.handlers`` with a callable that
  runs the function in a worker; an exception there fails the command with the user's
  exception type, message and traceback.
- Event handlers: many per type, ``*`` for every type, session and global ones both run,
  lowest ``priority`` first, after the event is stored. They never fail the publisher: a
  failing one records an ``EventHandlerFailed`` event. Events are dispatched in seq order per
  session; sessions proceed independently.
- Stored with their session (rows in ``handlers``) and restored on start. The rows are the
  truth (list, get and delete read them); the registrations in memory are what dispatch uses,
  brought up to date when another node sharing the database changes them (``reconcile``,
  bus/cluster.py).
"""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import logging
import sqlite3
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from llmgine_daemon.bus.codec import loads
from llmgine_daemon.bus.commands import CURRENT, command_depth
from llmgine_daemon.bus.errors import BusError, StorageError, UserCodeError, handler_not_found, not_found
from llmgine_daemon.bus.events import EVENT_COLUMNS, insert_event, row_to_event
from llmgine_daemon.bus.handler_registry import check_free_in_store
from llmgine_daemon.bus.sessions import fetch_session, require_active
from llmgine_daemon.bus.tools import check_code, check_timeout, code_rejected
from llmgine_daemon.observability import metrics, tracing
from llmgine_daemon.protocol import Command, ErrorCode, Event, Handler, now_iso
from llmgine_daemon.sandbox.calls import CallContext

if TYPE_CHECKING:
    from llmgine_daemon.bus.core import Bus

log = logging.getLogger("llmgine.handlers")

HANDLER_COLUMNS = "handler_id, session_id, kind, type, function, priority, timeout, created_at, code"
MAX_TYPE = 128
GONE_REMEMBERED = 1024
TYPE_RULE = f"1 to {MAX_TYPE} printable characters, no spaces"


class Queued(NamedTuple):
    """An event waiting for its handlers: what picks them, not its data (read back from the
    store when they run). A slow handler's backlog held every event whole: 200 events of
    900 KB that a session token published grew the daemon by 190 MB."""

    seq: int
    event_id: str
    session_id: str | None
    event_type: str
    traceparent: str | None  # of whoever published it: the handlers' spans join that trace


def valid_handler_type(type_: str) -> bool:
    """What a handler's type may be: registration and deletion by path check the same rule."""
    return 0 < len(type_) <= MAX_TYPE and type_.isprintable() and not any(c.isspace() for c in type_)


class HandlerFailed(UserCodeError):
    """A user command handler failed; the runner reports the user's exception type, message
    and traceback (``UserCodeError``), not the daemon's."""


@dataclass
class HandlerRow:
    handler_id: str
    session_id: str | None
    kind: str
    type: str
    function: str
    priority: int
    timeout: float | None
    created_at: str
    code: str

    def public(self, with_code: bool = False) -> Handler:
        return Handler(
            handler_id=self.handler_id,
            kind=self.kind,
            type=self.type,
            scope="session" if self.session_id else "global",
            session_id=self.session_id,
            function=self.function,
            priority=self.priority,
            timeout=self.timeout,
            created_at=self.created_at,
            handler_function=self.code if with_code else None,
        )


class UserHandlers:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._rows: dict[str, HandlerRow] = {}
        self._event_rows = 0  # how many of them handle events: none, nearly always (_on_event)
        self._registrations: dict[str, Any] = {}  # handler_id -> bus.handlers Registration
        self._depths: dict[str, int] = {}  # event_id -> depth its handlers run at
        # Per session: events waiting for their handlers (``Queued``: not their data).
        self._queues: dict[str | None, deque[Queued]] = {}
        self._tasks: dict[str | None, asyncio.Task[None]] = {}
        self._unsubscribe: Any = None
        # Ids deleted here lately: a re-read of the store racing with the delete must not bring
        # them back (reconcile).
        self._gone: deque[str] = deque(maxlen=GONE_REMEMBERED)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        def read(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(f"SELECT {HANDLER_COLUMNS} FROM handlers ORDER BY created_at, rowid").fetchall()

        for row in await self.bus.store.read(read):
            self._activate(HandlerRow(*row))
        self._unsubscribe = self.bus.events.subscribe(self._on_event)
        self.bus.sessions.hooks.append(self._on_session_end)

    async def restore(self, session_id: str) -> bool:
        """Activate the handlers of ``session_id`` (and global ones) this node does not know: they
        were registered on another node sharing the database. True if any."""

        def read(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(
                f"SELECT {HANDLER_COLUMNS} FROM handlers WHERE session_id = ? OR session_id IS NULL"
                " ORDER BY created_at, rowid",
                (session_id,),
            ).fetchall()

        added = False
        for row in await self.bus.store.read(read):
            if row[0] not in self._rows:
                self._activate(HandlerRow(*row))
                added = True
        return added

    async def reconcile(self, scopes: set[str | None] | None) -> None:
        """Make the handlers registered here those the store has for these scopes (session ids,
        None for the global scope; ``scopes`` None: all), after another node registered or
        deleted some, or ended their session (bus/cluster.py)."""

        def read(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            order = "ORDER BY created_at, rowid"
            if scopes is None:
                return conn.execute(f"SELECT {HANDLER_COLUMNS} FROM handlers {order}").fetchall()
            rows = []
            for scope in scopes:
                where = "session_id IS NULL" if scope is None else "session_id = ?"
                params = () if scope is None else (scope,)
                rows += conn.execute(f"SELECT {HANDLER_COLUMNS} FROM handlers WHERE {where} {order}", params).fetchall()
            return rows

        rows = [HandlerRow(*row) for row in await self.bus.store.read(read)]
        stored = {row.handler_id for row in rows}
        for row in list(self._rows.values()):
            if (scopes is None or row.session_id in scopes) and row.handler_id not in stored:
                self._gone.append(row.handler_id)
                self._deactivate(row)
        for row in sorted(rows, key=lambda r: r.created_at):
            if row.handler_id in self._rows or row.handler_id in self._gone:
                continue
            try:
                self._activate(row)
            except BusError as exc:
                log.warning("handler %s not loaded: %s", row.handler_id, exc.message)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _on_session_end(self, session_id: str, purged: bool) -> None:
        for row in [r for r in self._rows.values() if r.session_id == session_id]:
            self._deactivate(row)

    def _activate(self, row: HandlerRow) -> None:
        if row.handler_id in self._rows:  # loaded already (a re-read came first)
            return
        self.bus.warm_sandbox()  # it runs in the sandbox: its workers start now (sandbox/pool.py)
        if row.kind == "command":
            registry = getattr(self.bus, "handlers", None)
            if registry is not None:
                self._registrations[row.handler_id] = registry.register(
                    row.type,
                    self._command_callable(row),
                    session_id=row.session_id,
                    owner=f"handler:{row.handler_id}",
                )
        self._rows[row.handler_id] = row
        self._event_rows += row.kind == "event"

    def adopt(self, rows: list[tuple[Any, ...]]) -> None:
        """Register handlers whose rows another write stored (a fork's copies, bus/fork.py)."""
        for row in rows:
            self._activate(HandlerRow(*row))

    def _deactivate(self, row: HandlerRow) -> None:
        gone = self._rows.pop(row.handler_id, None)
        if gone is not None:
            self._event_rows -= gone.kind == "event"
        reg = self._registrations.pop(row.handler_id, None)
        if reg is not None:
            self.bus.handlers.unregister(reg)

    # -- registration ----------------------------------------------------------------------

    async def register(
        self,
        session_id: str | None,
        kind: str,
        type_: str,
        code: str,
        priority: int = 100,
        timeout: float | None = None,
        replace: bool = False,
    ) -> Handler:
        """``replace``: the scope's handlers of this kind and type (the command handler, or
        every event handler of the type) make way for this one, in the same transaction."""
        field = "command_type" if kind == "command" else "event_type"
        if not valid_handler_type(type_):
            raise BusError(ErrorCode.VALIDATION_ERROR, f"invalid {field}", {"field": field, "issue": TYPE_RULE})
        if kind == "command" and "*" in type_:
            raise BusError(
                ErrorCode.VALIDATION_ERROR,
                "command handlers need an exact type",
                {"field": field, "issue": "wildcards are for event handlers"},
            )
        check_code(code, "handler_function")
        check_timeout(timeout, self.bus.max_timeout)
        if session_id is not None:
            await self.bus.store.read(lambda c: require_active(c, session_id))
        if kind == "command":
            self._check_free(session_id, type_, replace)
        outcome = await self.bus.sandbox_pool().inspect(kind, code, None, share=session_id)
        if not outcome.ok:
            raise code_rejected(outcome, "handler_function")
        info = outcome.result
        if info["positional"] < 1 and not info["var_positional"]:
            raise BusError(
                ErrorCode.VALIDATION_ERROR,
                f"handler_function: {info['function']}() must take the {kind} as its argument",
                {"field": "handler_function", "issue": "needs one positional parameter"},
            )
        row = HandlerRow(
            str(uuid.uuid4()), session_id, kind, type_, info["function"], priority, timeout, now_iso(), code
        )

        def write(conn: sqlite3.Connection) -> list[str]:
            if session_id is not None:
                require_active(conn, session_id)
            same = "SELECT handler_id FROM handlers WHERE kind = ? AND type = ? AND session_id IS ?"
            replaced = [r[0] for r in conn.execute(same, (kind, type_, session_id)).fetchall()] if replace else []
            conn.executemany("DELETE FROM handlers WHERE handler_id = ?", [(i,) for i in replaced])
            if session_id is not None:
                self.bus.capacity.check_handlers(conn, session_id)
            if kind == "command" and not replace and conn.execute(same, (kind, type_, session_id)).fetchone():
                raise self._conflict(session_id, type_)
            if kind == "command" and session_id is not None:
                # An engine another node made a moment ago is not in this node's memory yet.
                check_free_in_store(conn, type_, session_id, self.bus.engines.types_for(type_), handlers=False)
            conn.execute(
                f"INSERT INTO handlers ({HANDLER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.handler_id, session_id, kind, type_, row.function, priority, timeout, row.created_at, code),
            )
            self.bus.cluster.registry_changed(conn, session_id)
            return replaced

        if kind == "command":
            self._check_free(session_id, type_, replace)
        for handler_id in await self.bus.store.write(write):
            self._gone.append(handler_id)
            if (old := self._rows.get(handler_id)) is not None:
                self._deactivate(old)
        self._activate(row)
        return row.public()

    def _check_free(self, session_id: str | None, type_: str, replace: bool = False) -> None:
        """CONFLICT if the scope has a command handler for the type; with ``replace`` only if
        that one is not a user handler (an engine's, say: `handler add` never replaces it)."""
        registry = getattr(self.bus, "handlers", None)
        if registry is not None:
            try:
                registry.check_free(type_, session_id)
            except BusError as exc:
                if not (replace and str(exc.details.get("owner", "")).startswith("handler:")):
                    raise
        elif not replace and any(
            r.kind == "command" and r.type == type_ and r.session_id == session_id for r in self._rows.values()
        ):
            raise self._conflict(session_id, type_)

    @staticmethod
    def _conflict(session_id: str | None, type_: str) -> BusError:
        scope = f"session {session_id!r}" if session_id else "the global scope"
        return BusError(
            ErrorCode.CONFLICT,
            f"a handler for {type_!r} is already registered in {scope}",
            {"command_type": type_, "session_id": session_id},
        )

    async def _stored(self, session_id: str | None, where: str = "", params: tuple[Any, ...] = ()) -> list[HandlerRow]:
        """The scope's handlers as stored (every node's), after checking the session exists."""

        def read(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            if session_id is not None:
                fetch_session(conn, session_id)
            return conn.execute(
                f"SELECT {HANDLER_COLUMNS} FROM handlers WHERE session_id IS ?{where} ORDER BY created_at, rowid",
                (session_id, *params),
            ).fetchall()

        return [HandlerRow(*row) for row in await self.bus.store.read(read)]

    async def list(self, session_id: str | None, kind: str | None = None) -> list[Handler]:
        """A session's handlers (session_id) or the global ones (None)."""
        rows = await self._stored(session_id, *((" AND kind = ?", (kind,)) if kind is not None else ()))
        rows.sort(key=lambda r: (r.kind, r.type, r.priority, r.created_at))
        return [r.public() for r in rows]

    async def get(self, session_id: str | None, handler_id: str) -> Handler:
        rows = await self._stored(session_id, " AND handler_id = ?", (handler_id,))
        if not rows:
            raise not_found("handler", handler_id=handler_id, session_id=session_id)
        return rows[0].public(with_code=True)

    async def delete(self, session_id: str | None, kind: str, type_: str) -> int:
        """Remove the scope's handlers of that kind and type; 404 when there are none."""

        def write(conn: sqlite3.Connection) -> list[str]:
            if session_id is not None:
                fetch_session(conn, session_id)
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT handler_id FROM handlers WHERE session_id IS ? AND kind = ? AND type = ?",
                    (session_id, kind, type_),
                ).fetchall()
            ]
            if not ids:
                raise handler_not_found(kind, type_, session_id)
            conn.executemany("DELETE FROM handlers WHERE handler_id = ?", [(i,) for i in ids])
            self.bus.cluster.registry_changed(conn, session_id)
            return ids

        ids = await self.bus.store.write(write)
        for handler_id in ids:
            self._gone.append(handler_id)
            row = self._rows.get(handler_id)
            if row is not None:
                self._deactivate(row)
        return len(ids)

    # -- command handlers ------------------------------------------------------------------

    def _command_callable(self, row: HandlerRow) -> Any:
        async def handle(command: Any) -> Any:
            record = {f: getattr(command, f) for f in command.__struct_fields__}
            depth = command_depth(record.get("metadata"))
            timeout = getattr(command, "timeout", None)
            # The bus cancels us at the command's timeout; the sandbox deadline is a backstop.
            deadline = row.timeout or (timeout + 1 if timeout else None)
            with tracing.span(
                "handler.run",
                handler_id=row.handler_id,
                function=row.function,
                command_type=row.type,
                scope="session" if row.session_id else "global",
                depth=depth,
            ) as span:
                outcome = await self.bus.sandbox_pool().run(
                    "command",
                    row.code,
                    row.function,
                    record,
                    deadline=deadline,
                    context=CallContext(
                        command.session_id,
                        "command",
                        row.type,
                        depth,
                        extra={"handler_id": row.handler_id, "command_id": command.command_id},
                    ),
                )
                if not outcome.ok:
                    error = outcome.error or {}
                    span.fail(f"{error.get('code')}: {error.get('message')}")
                    raise HandlerFailed(error, output=outcome.output, handler_id=row.handler_id, function=row.function)
            return outcome.result

        return handle

    async def execute_nested(
        self, ctx: CallContext, command_type: str, parameters: dict[str, Any], metadata: dict[str, Any], depth: int
    ) -> Command:
        """``bus.execute`` from user code: a command in the caller's session, one level deeper.
        Inside a running command of that session (a command handler, or a tool it called),
        it runs at once instead of queueing behind the command that waits for it."""
        if ctx.session_id is None:
            raise BusError(ErrorCode.VALIDATION_ERROR, "bus.execute needs a session")
        parent = CURRENT.get(None)
        if parent is not None and not (parent.running and parent.command.session_id == ctx.session_id):
            parent = None
        meta = {**metadata, "_depth": depth}
        if parent is not None:
            meta.setdefault("parent_command_id", parent.command.command_id)
        return await self.bus.commands.execute_nested(
            ctx.session_id,
            command_type,
            parameters,
            meta,
            parent=parent,
        )

    # -- event handlers --------------------------------------------------------------------

    def note_depth(self, event_id: str, depth: int) -> None:
        self._depths[event_id] = depth

    def _matching(self, event: Event | Queued) -> builtins.list[HandlerRow]:
        rows = [
            r
            for r in self._rows.values()
            if r.kind == "event"
            and (r.type == event.event_type or r.type == "*")
            and (r.session_id is None or r.session_id == event.session_id)
        ]
        rows.sort(key=lambda r: (r.priority, r.created_at))
        return rows

    def _on_event(self, event: Event) -> None:
        depth = self._depths.pop(event.event_id, 0) if self._depths else 0
        if not self._event_rows:  # every event of every session comes here: one test when none
            return
        if not self._matching(event):
            return
        if depth > self.bus.sandbox_pool().limits.max_depth:
            log.warning("not running handlers of %s %s: nesting depth limit reached", event.event_type, event.event_id)
            return
        self._depths[event.event_id] = depth
        key = event.session_id
        queued = Queued(event.seq, event.event_id, key, event.event_type, tracing.current_traceparent())
        self._queues.setdefault(key, deque()).append(queued)
        if key not in self._tasks:
            # A fresh context: the dispatcher outlives whichever command or request published
            # first, and must not run (or trace, or bus.execute) as part of it.
            self._tasks[key] = asyncio.get_running_loop().create_task(self._drain(key), context=contextvars.Context())

    async def _drain(self, key: str | None) -> None:
        queue = self._queues[key]
        try:
            while queue:
                queued = queue.popleft()
                event = await self._stored_event(queued.seq)
                if event is None:  # pruned, or its session purged, meanwhile
                    self._depths.pop(queued.event_id, None)
                    continue
                depth = max(self._depths.pop(event.event_id, 0), await self._depth_of_command(event))
                if depth > self.bus.sandbox_pool().limits.max_depth:
                    continue  # (a command at the limit: see _depth_of_command)
                for row in self._matching(event):
                    if row.handler_id in self._rows:  # deleted meanwhile: skip
                        await self._run_event_handler(row, event, depth, queued.traceparent)
        finally:
            self._tasks.pop(key, None)
            if not queue:
                self._queues.pop(key, None)

    async def _stored_event(self, seq: int) -> Event | None:
        def read(conn: sqlite3.Connection) -> Event | None:
            row = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE seq = ?", (seq,)).fetchone()
            return row_to_event(row) if row is not None else None

        return await self.bus.store.read(read)

    async def _depth_of_command(self, event: Event) -> int:
        """The nesting depth of the command an event is about (``data.command_id``: its
        CommandStarted and CommandResult, its engine's events): handlers of an event run one
        level below what caused it, and a command ``bus.execute`` ran is that deep. Without it
        a handler of CommandResult that executes a command ran at depth 0 at every round, past
        ``sandbox.max_depth``, for as long as the session lived."""
        cid = event.data.get("command_id")
        if not isinstance(cid, str) or event.session_id is None:
            return 0
        job = self.bus.commands.runner.jobs.get(cid)
        if job is not None:
            return command_depth(job.record.metadata)
        try:
            row = await self.bus.store.fetchone(
                "SELECT metadata FROM commands WHERE command_id = ? AND session_id = ?", (cid, event.session_id)
            )
        except StorageError as exc:  # the handlers still run, as deep as they may
            log.warning("depth of command %s unknown (%s): its event's handlers run at the limit", cid, exc)
            return self.bus.sandbox_pool().limits.max_depth
        return command_depth(loads(row[0])) if row and row[0] else 0

    async def _run_event_handler(
        self, row: HandlerRow, event: Event, depth: int, traceparent: str | None = None
    ) -> None:
        record = {f: getattr(event, f) for f in event.__struct_fields__}
        ctx = CallContext(
            event.session_id,
            "event",
            event.event_type,
            depth,
            extra={"handler_id": row.handler_id, "event_id": event.event_id},
        )
        with tracing.span(
            "event_handler.run",
            parent=tracing.parse_traceparent(traceparent),
            session_id=event.session_id,
            event_type=event.event_type,
            event_id=event.event_id,
            handler_id=row.handler_id,
            function=row.function,
            depth=depth,
        ) as span:
            try:
                outcome = await self.bus.sandbox_pool().run(
                    "event",
                    row.code,
                    row.function,
                    record,
                    context=ctx,
                    deadline=row.timeout,
                )
            except BusError as exc:
                outcome_error: dict[str, Any] | None = {"code": exc.code, "message": exc.message}
            else:
                outcome_error = None if outcome.ok else outcome.error
            metrics.inc(
                "event_handler_runs_total", type=event.event_type, outcome="ok" if outcome_error is None else "error"
            )
            if outcome_error is not None:
                span.fail(f"{outcome_error.get('code')}: {outcome_error.get('message')}")
        if outcome_error is None:
            return
        data = {
            "handler_id": row.handler_id,
            "function": row.function,
            "event_id": event.event_id,
            "event_type": event.event_type,
            "scope": "session" if row.session_id else "global",
            "error": outcome_error,
        }

        def write(conn: sqlite3.Connection) -> Event | None:
            if event.session_id is not None:
                found = conn.execute("SELECT status FROM sessions WHERE session_id = ?", (event.session_id,)).fetchone()
                if found is None:
                    return None
            return insert_event(conn, event.session_id, "EventHandlerFailed", data, source="bus")

        try:
            failed = await self.bus.store.write(write)
        except Exception:  # never let a failing handler take the dispatcher down
            log.exception("recording EventHandlerFailed")
            return
        if failed is not None:
            self.note_depth(failed.event_id, depth + 1)
            self.bus.events.notify([failed])
