"""The engine registry: engine records (create, list, read, execute on, delete; restore after
a restart), and ``EngineBase``, the base class of engine types.

An engine is a command handler with a record: creating one registers it as the handler of its
engine type's command type in its session (so a second engine of a type in one session is a
CONFLICT), deleting it unregisters it. Engines persist; ``start`` re-creates and re-registers
them before queued commands resume.

The engine types themselves live in ``llmgine_daemon/engines/`` and are handed to the Bus by
the app with the context their constructors get (bus/ does not import them: they import the
bus's handler context).
"""

from __future__ import annotations

import logging
import sqlite3
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from llmgine_daemon.bus.codec import dumps, loads, new_id
from llmgine_daemon.bus.commands import CURRENT, CommandSpec, validate
from llmgine_daemon.bus.errors import BusError, invalid, not_found
from llmgine_daemon.bus.events import insert_event
from llmgine_daemon.bus.handler_registry import check_free_in_store
from llmgine_daemon.bus.sessions import require_active
from llmgine_daemon.bus.usage import UsageBook
from llmgine_daemon.observability import tracing
from llmgine_daemon.observability.context import reset_fields, set_fields
from llmgine_daemon.protocol import (
    Command,
    CommandCreate,
    Engine,
    EngineConfigField,
    EngineList,
    EngineType,
    ErrorCode,
    Usage,
    now_iso,
)
from llmgine_daemon.protocol.integral import whole
from llmgine_daemon.store.migrations import UNFINISHED_TERM as UNFINISHED

# A session's running commands of one type, through the partial index of unfinished commands
# (migration 137), which it repeats.
RUNNING_OF_TYPE = (
    "SELECT command_id FROM commands WHERE session_id = ? AND command_type = ?"
    f" AND {UNFINISHED} AND status IN ('executing', 'waiting_approval')"
)

if TYPE_CHECKING:
    from llmgine_daemon.bus.core import Bus
    from llmgine_daemon.bus.idempotency import IdempotencyKey

log = logging.getLogger("llmgine.engines")

# How many engine ids deleted here a re-read of the store may still see for a moment.
GONE_REMEMBERED = 1024
ENGINE_COLUMNS = "engine_id, session_id, engine_type, model_name, configuration, status, created_at"
_PY_TYPES: dict[str, Any] = {
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "string": (str,),
}


@dataclass(frozen=True, slots=True)
class ConfigField:
    name: str
    type: str  # integer | number | boolean | string
    default: Any
    description: str
    minimum: int | float | None = None
    maximum: int | float | None = None

    def normal(self, value: Any) -> Any:
        """A value that fits, as the engine uses it: an integer field's 26.0 as 26."""
        return whole(value) if self.type == "integer" and isinstance(value, float) else value

    def check(self, value: Any) -> str | None:
        """None if ``value`` fits, else the issue."""
        if value is None:
            return None
        if isinstance(value, bool) and self.type != "boolean":
            return f"must be of type {self.type}"
        if self.type == "integer" and whole(value) is not None:
            pass  # 26.0 is an integer (JSON Schema's, pydantic's): ``normal`` makes it 26
        elif not isinstance(value, _PY_TYPES[self.type]):
            return f"must be of type {self.type}"
        if self.type in ("integer", "number"):
            # Compared as they are (Python compares an int with a float exactly): float() of
            # an integer past a float's range (10**400) raised OverflowError.
            if self.minimum is not None and value < self.minimum:
                return f"must be at least {self.minimum:g}"
            if self.maximum is not None and value > self.maximum:
                return f"must be at most {self.maximum:g}"
        return None


class EngineBase:
    """One engine type. Subclasses set the class variables and implement ``handle``: the
    command handler (an async callable taking the command record, returning a JSON result).

    The bus builds an engine as ``cls(record, context)``: its stored record, and the context
    the app gave the Bus (``Bus(engine_context=...)``; engines/context.py), which holds what
    the engine uses besides its record. bus/ never looks inside it."""

    engine_type: ClassVar[str]
    command_type: ClassVar[str]
    description: ClassVar[str]
    config_fields: ClassVar[tuple[ConfigField, ...]] = ()
    # True for an engine that calls nothing outside the daemon (see handler_registry.Registration).
    eager: ClassVar[bool] = False

    def __init__(self, record: Engine, context: Any) -> None:
        self.record = record
        self.context = context

    @classmethod
    def _fields(cls) -> dict[str, ConfigField]:
        # Looked up on every setting read (several per command): built once per class.
        by_name = cls.__dict__.get("_fields_by_name")
        if by_name is None:
            by_name = {f.name: f for f in cls.config_fields}
            cls._fields_by_name = by_name  # type: ignore[attr-defined]
        return by_name

    def setting(self, name: str, command: Command | None = None) -> Any:
        """A configuration value: the command's parameter of that name when it sets one, else
        the engine's configuration, else the field's default. A parameter that does not fit
        the field is VALIDATION_ERROR naming it (``-p fail=true`` is the string "true"), as
        the LLM engines' overrides are: taken as no override, the command ran otherwise than
        asked, without a word."""
        fld = self._fields()[name]
        if command is not None and command.parameters.get(name) is not None:
            value = command.parameters[name]
            issue = fld.check(value)
            if issue is not None:
                raise invalid(f"parameters.{name}", issue)
            return fld.normal(value)
        value = self.record.configuration.get(name)
        return fld.default if value is None else fld.normal(value)

    async def handle(self, command: Command) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the engine holds (connections, clients)."""

    @classmethod
    def describe(cls) -> EngineType:
        return EngineType(
            engine_type=cls.engine_type,
            command_type=cls.command_type,
            description=cls.description,
            configuration=[EngineConfigField(f.name, f.type, f.default, f.description) for f in cls.config_fields],
        )

    @classmethod
    def validate_new(cls, model_name: str | None, configuration: dict[str, Any], context: Any) -> None:
        """Checks of a new engine's model and configuration together (an LLM engine's
        provider has its own ranges); a stored engine is restored whatever they say."""

    @classmethod
    def validate_config(cls, configuration: dict[str, Any]) -> dict[str, Any]:
        fields = {f.name: f for f in cls.config_fields}
        for name, value in configuration.items():
            fld = fields.get(name)
            if fld is None:
                raise invalid(
                    f"configuration.{name}",
                    f"unknown configuration field for {cls.engine_type}",
                    available=sorted(fields),
                )
            issue = fld.check(value)
            if issue is not None:
                raise invalid(f"configuration.{name}", issue)
            configuration[name] = fld.normal(value)  # stored as the engine uses it
        return configuration


def row_to_engine(row: tuple[Any, ...], command_type: str) -> Engine:
    return Engine(
        engine_id=row[0],
        session_id=row[1],
        engine_type=row[2],
        model_name=row[3],
        configuration=loads(row[4]),
        status=row[5],
        created_at=row[6],
        command_type=command_type,
    )


class Engines:
    def __init__(self, bus: Bus, types: dict[str, type[EngineBase]], context: Any = None) -> None:
        self.bus = bus
        self.store = bus.store
        self.types = types
        # Passed to every engine's constructor (see EngineBase).
        self.context = context
        self.running: dict[str, EngineBase] = {}
        # Engines being created here (registered before their write commits) and ids deleted
        # here lately: a re-read of the store racing with either must not undo it (reconcile).
        self._creating: set[str] = set()
        self._gone: deque[str] = deque(maxlen=GONE_REMEMBERED)

    def _owner(self, engine_id: str) -> str:
        return f"engine:{engine_id}"

    def _command_type(self, engine_type: str) -> str:
        cls = self.types.get(engine_type)
        return cls.command_type if cls is not None else ""

    def types_for(self, command_type: str) -> list[str]:
        """The engine types whose engines handle ``command_type``."""
        return [name for name, cls in self.types.items() if cls.command_type == command_type]

    def describe_types(self) -> list[EngineType]:
        return [cls.describe() for cls in self.types.values()]

    def _activate(self, record: Engine) -> EngineBase:
        """Instantiate and register as its session's handler (CONFLICT if the slot is taken);
        an engine running already (a re-read of the store came first) is left as it is."""
        running = self.running.get(record.engine_id)
        if running is not None:
            return running
        cls = self.types[record.engine_type]
        engine = cls(record, self.context)

        async def run(command: Command) -> Any:
            token = set_fields(engine_id=record.engine_id)
            try:
                execution = CURRENT.get(None)
                if execution is not None and not execution.traced:  # the batch has the span
                    return await engine.handle(command)
                with tracing.span("engine.run", engine_type=record.engine_type, model=record.model_name):
                    return await engine.handle(command)
            finally:
                reset_fields(token)

        self.bus.handlers.register(
            cls.command_type,
            run,
            session_id=record.session_id,
            owner=self._owner(record.engine_id),
            eager=cls.eager,
        )
        self.running[record.engine_id] = engine
        return engine

    async def _deactivate(self, engine_id: str) -> None:
        self.bus.handlers.unregister_owner(self._owner(engine_id))
        engine = self.running.pop(engine_id, None)
        if engine is not None:
            try:
                await engine.close()
            except Exception:
                log.exception("closing engine %s", engine_id)

    async def create(
        self, engine_type: str, session_id: str, model_name: str | None, configuration: dict[str, Any]
    ) -> Engine:
        cls = self.types.get(engine_type)
        if cls is None:
            raise invalid("engine_type", f"unknown engine type {engine_type!r}", available=sorted(self.types))
        cls.validate_config(configuration)
        cls.validate_new(model_name, configuration, self.context)
        record = Engine(
            engine_id=new_id(),
            engine_type=engine_type,
            model_name=model_name,
            status="initialized",
            session_id=session_id,
            configuration=configuration,
            created_at=now_iso(),
            command_type=cls.command_type,
            usage=Usage(),  # none yet: as GET /api/engines/{id} would say
        )
        # A session at its maximum says so before a second engine of a type meets CONFLICT.
        await self.store.read(lambda conn: self.bus.capacity.check_engines(conn, session_id))
        # Registered before the write, so two concurrent creates cannot both take the slot;
        # undone if the write fails (no session, session closed, at the maximum).
        self._activate(record)
        self._creating.add(record.engine_id)

        def write(conn: sqlite3.Connection) -> Any:
            require_active(conn, session_id)
            self.bus.capacity.check_engines(conn, session_id)
            self.bus.cluster.registry_changed(conn, session_id)
            # Another node may have taken the slot a moment ago (its engines reach this node's
            # memory only at the next re-read): the store decides.
            check_free_in_store(conn, cls.command_type, session_id, self.types_for(cls.command_type))
            conn.execute(
                f"INSERT INTO engines ({ENGINE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.engine_id,
                    session_id,
                    engine_type,
                    model_name,
                    dumps(configuration),
                    record.status,
                    record.created_at,
                ),
            )
            return insert_event(
                conn,
                session_id,
                "EngineCreated",
                {
                    "engine_id": record.engine_id,
                    "engine_type": engine_type,
                    "model_name": model_name,
                    "status": record.status,
                },
                timestamp=record.created_at,
            )

        try:
            event = await self.store.write(write)
        except BaseException:
            await self._deactivate(record.engine_id)
            raise
        finally:
            self._creating.discard(record.engine_id)
        self.bus.events.notify([event])
        return record

    def adopt(self, rows: list[tuple[Any, ...]]) -> list[Engine]:
        """Run engines whose rows another write stored (a fork's copies, bus/fork.py), as a
        restart would; returns their records."""
        records = [row_to_engine(row, self._command_type(row[2])) for row in rows]
        for record in records:
            self._activate(record)
        return records

    async def session_of(self, engine_id: str) -> str | None:
        """The session an engine belongs to; None for no such engine."""
        row = await self.store.fetchone("SELECT session_id FROM engines WHERE engine_id = ?", (engine_id,))
        return row[0] if row is not None else None

    async def get(self, engine_id: str) -> Engine:
        """The engine with its usage (the sum over its commands: bus/usage.py)."""
        return await self._get(engine_id, with_usage=True)

    async def _get(self, engine_id: str, *, with_usage: bool = False) -> Engine:
        def read(conn: sqlite3.Connection) -> tuple[tuple[Any, ...], Usage | None]:
            row = conn.execute(f"SELECT {ENGINE_COLUMNS} FROM engines WHERE engine_id = ?", (engine_id,)).fetchone()
            if row is None:
                raise not_found("engine", engine_id=engine_id)
            return row, UsageBook.sums(conn, "engine_id", engine_id) if with_usage else None

        row, usage = await self.store.read(read)
        engine = row_to_engine(row, self._command_type(row[2]))
        engine.usage = usage
        return engine

    async def list(self, session_id: str | None, status: str | None, limit: int, offset: int) -> EngineList:
        def read(conn: sqlite3.Connection) -> EngineList:
            where, params = [], []
            if session_id:
                where.append("session_id = ?")
                params.append(session_id)
            if status == "active":
                where.append("status != 'stopped'")
            elif status:
                where.append("status = ?")
                params.append(status)
            clause = f"WHERE {' AND '.join(where)}" if where else ""
            total = conn.execute(f"SELECT COUNT(*) FROM engines {clause}", params).fetchone()[0]
            rows = conn.execute(
                f"SELECT {ENGINE_COLUMNS} FROM engines {clause} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
                (*params, limit, offset),
            ).fetchall()
            return EngineList([row_to_engine(r, self._command_type(r[2])) for r in rows], total, limit, offset)

        return await self.store.read(read)

    async def delete(self, engine_id: str) -> Engine:
        """Stop the engine, unregister its handler and delete its record."""

        def write(conn: sqlite3.Connection) -> tuple[tuple[Any, ...], Any]:
            row = conn.execute(f"SELECT {ENGINE_COLUMNS} FROM engines WHERE engine_id = ?", (engine_id,)).fetchone()
            if row is None:
                raise not_found("engine", engine_id=engine_id)
            conn.execute("DELETE FROM engines WHERE engine_id = ?", (engine_id,))
            self.bus.cluster.registry_changed(conn, row[1])
            event = insert_event(
                conn, row[1], "EngineDeleted", {"engine_id": engine_id, "engine_type": row[2], "status": "stopped"}
            )
            return row, event

        row, event = await self.store.write(write)
        self._gone.append(engine_id)
        await self._deactivate(engine_id)
        self.bus.events.notify([event])
        engine = row_to_engine(row, self._command_type(row[2]))
        engine.status = "stopped"
        await self._stop_commands(engine)
        return engine

    async def _stop_commands(self, engine: Engine) -> None:
        """Cancel the deleted engine's command running here, or on the node holding its session
        (bus/cluster.py): it would go on calling the model and running tools for an engine that
        is gone. (Queued ones fail HANDLER_NOT_FOUND when their turn comes, unless an engine of
        the type was created meanwhile.)"""
        runner = self.bus.commands.runner
        for job in list(runner.jobs.values()):
            record = job.record
            if record.session_id == engine.session_id and record.command_type == engine.command_type:
                if job.state in ("starting", "running"):
                    runner.cancel_running(job, "engine")
        if self.bus.cluster.owns(engine.session_id):
            return
        for (command_id,) in await self.store.fetchall(RUNNING_OF_TYPE, (engine.session_id, engine.command_type)):
            await self.bus.cluster.request_cancel(engine.session_id, command_id, "engine")

    async def execute(
        self,
        engine_id: str,
        prompt: str,
        parameters: dict[str, Any],
        metadata: dict[str, Any],
        idem: IdempotencyKey | None = None,
    ) -> tuple[Command, bool]:
        """Run a prompt as a command of the engine's type in the engine's session; returns
        (record, replayed) as ``Commands.submit`` (a retry with the same Idempotency-Key
        answers the command already stored)."""
        engine = await self._get(engine_id)
        if engine_id not in self.running:
            # A stopped engine (its session ended) is not registered: say why, plainly.
            raise BusError(
                ErrorCode.SESSION_CLOSED,
                f"engine {engine_id!r} is stopped (its session {engine.session_id!r} ended)",
                {"engine_id": engine_id, "session_id": engine.session_id},
            )
        body = CommandCreate(engine.command_type, {**parameters, "prompt": prompt}, metadata)
        spec: CommandSpec = validate(body)
        return await self.bus.commands.submit(engine.session_id, spec, idem)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        rows = await self.store.read(
            lambda conn: conn.execute(
                f"SELECT {ENGINE_COLUMNS} FROM engines WHERE status != 'stopped' ORDER BY rowid"
            ).fetchall()
        )
        restored = 0
        for row in rows:
            if row[2] not in self.types:
                log.warning("engine %s has unknown type %r; not restored", row[0], row[2])
                continue
            try:
                self._activate(row_to_engine(row, self._command_type(row[2])))
                restored += 1
            except BusError as exc:
                log.warning("engine %s not restored: %s", row[0], exc.message)
        if restored:
            log.info("restored %d engine(s)", restored)

    async def restore(self, session_id: str) -> bool:
        """Register the session's engines this node does not run yet (created by another node
        sharing the database: each node keeps its engines' handlers in memory). True if any."""
        rows = await self.store.read(
            lambda conn: conn.execute(
                f"SELECT {ENGINE_COLUMNS} FROM engines WHERE session_id = ? AND status != 'stopped' ORDER BY rowid",
                (session_id,),
            ).fetchall()
        )
        added = False
        for row in rows:
            if row[0] in self.running or row[2] not in self.types:
                continue
            try:
                self._activate(row_to_engine(row, self._command_type(row[2])))
                added = True
            except BusError as exc:
                log.warning("engine %s not restored: %s", row[0], exc.message)
        return added

    async def reconcile(self, session_ids: set[str] | None) -> None:
        """Make the engines run here those the store has for these sessions (None: all), after
        another node created or deleted some, or ended their session (bus/cluster.py)."""

        def read(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            where = "status != 'stopped'"
            if session_ids is None:
                return conn.execute(f"SELECT {ENGINE_COLUMNS} FROM engines WHERE {where} ORDER BY rowid").fetchall()
            return [
                row
                for sid in sorted(session_ids)
                for row in conn.execute(
                    f"SELECT {ENGINE_COLUMNS} FROM engines WHERE session_id = ? AND {where} ORDER BY rowid", (sid,)
                ).fetchall()
            ]

        rows = await self.store.read(read)
        stored = {row[0] for row in rows}
        for engine_id, engine in list(self.running.items()):
            in_scope = session_ids is None or engine.record.session_id in session_ids
            if in_scope and engine_id not in stored and engine_id not in self._creating:
                self._gone.append(engine_id)
                await self._deactivate(engine_id)
        for row in rows:
            if row[0] in self.running or row[0] in self._gone or row[2] not in self.types:
                continue
            try:
                self._activate(row_to_engine(row, self._command_type(row[2])))
            except BusError as exc:
                log.warning("engine %s not loaded: %s", row[0], exc.message)

    async def stop(self) -> None:
        for engine_id in list(self.running):
            await self._deactivate(engine_id)

    async def on_session_end(self, session_id: str, purged: bool) -> None:
        # Sessions.close already marked them stopped in the store.
        for engine_id, engine in list(self.running.items()):
            if engine.record.session_id == session_id:
                self._gone.append(engine_id)
                await self._deactivate(engine_id)
