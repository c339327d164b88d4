"""Approval before a tool runs: a person says yes (maybe with edited arguments) or no.

A ToolChat engine that wants to call a tool needing approval (engines/approval.py decides
which) asks here, and its command waits:

    request  one write: the ``approvals`` row (with the engine's tool-loop checkpoint), the
             command's status ``executing -> waiting_approval``, an ``ApprovalRequested`` event
             {approval_id, command_id, engine_id, call_id, tool_name, arguments, expires_at}
    decide   ``POST /api/sessions/{id}/approvals/{approval_id}`` {decision, reason?,
             arguments?}: one write: the row's decision, the command back to ``executing``, an
             ``ApprovalDecided`` event {approval_id, command_id, tool_name, decision, reason,
             arguments, decided_by, decided_at}; then the waiting engine is woken
    expire   at ``expires_at`` (``tools.approval_timeout`` after the request) the engine
             decides it itself: ``expired``, which the model hears as a denial
    cancel   the command cancelled, timed out or its session ended while waiting: the request
             is ``cancelled`` and the command back to ``executing`` so the runner records its end

The store is the truth; an in-memory future per approval only wakes the waiting engine.

**Restart.** A daemon that stops (or dies) while a command waits leaves the row ``pending``
and the command ``waiting_approval``: shutdown does not finish such a command (its result
write expects ``executing``, so it leaves the row alone), and the engine does not write its
turn to memory. At the next start, before the command queue is recovered, ``start`` puts
those commands back to ``queued``; the queue starts them again (a second ``CommandStarted``)
and the engine, finding the checkpoint of its command's latest approval, resumes its tool loop
from there: it waits again for the same approval (no new ``ApprovalRequested``), or goes on at
once if it was decided meanwhile. What the model was asked before the checkpoint is not asked
again (its tokens were counted then).

A decision acknowledged (its write committed: 200) just before a ``kill -9`` left the command
``executing`` and the checkpoint in place, its engine not yet gone on: such commands are queued
again at start too (``UNTAKEN_DECISIONS``), and go on from the decision (they were recorded
``interrupted``, the approved tool never run). The engine clears the checkpoint (``consume``)
before it runs the tool, so a command found so has run nothing since.

**Several nodes** sharing a database: the others' commands wait on live nodes, so a start
touches none; a node taking a session over from a node that is gone (bus/cluster_shared.py)
does both for that session (``requeue``), in the write that takes its lease. ``consume`` checks
the lease in its write, so a node that lost the session (stalled past the lease timeout) cannot
act on a decision the node that took it over is carrying out.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmgine_daemon.aio import wait_event
from llmgine_daemon.bus import jsonschema
from llmgine_daemon.bus.codec import dumps, loads, new_id, row_reader
from llmgine_daemon.bus.errors import BusError, not_found
from llmgine_daemon.bus.events import insert_event
from llmgine_daemon.bus.sessions import fetch_session
from llmgine_daemon.protocol import Approval, ApprovalList, ErrorCode, Event, now_iso, parse_iso, to_iso

if TYPE_CHECKING:
    from llmgine_daemon.bus.core import Bus

APPROVAL_COLUMNS = (
    "approval_id, session_id, command_id, engine_id, call_id, tool_name, arguments, status, requested_at,"
    " expires_at, decided_at, decided_by, reason, final_arguments"
)
DECISIONS = {"approve": "approved", "deny": "denied"}
# Executing commands whose latest approval was decided (not cancelled: that command is ending)
# and still holds its checkpoint: the engine clears it (``consume``) before it acts on the
# decision, so such a command did nothing since the decision. Read at start, before the
# executing commands are recorded interrupted.
UNTAKEN_DECISIONS = (
    "SELECT a.command_id FROM approvals a JOIN commands c ON c.command_id = a.command_id"
    " WHERE c.status = 'executing' AND a.status IN ('approved', 'denied', 'expired') AND a.state IS NOT NULL"
    " AND a.approval_id = (SELECT b.approval_id FROM approvals b WHERE b.command_id = a.command_id"
    " ORDER BY b.requested_at DESC, b.approval_id DESC LIMIT 1)"
)
row_to_approval = row_reader(Approval, APPROVAL_COLUMNS, json=("arguments", "final_arguments"))


@dataclass(frozen=True)
class ApprovalPolicy:
    """``tools.require_approval`` (every tool) and ``tools.approval_timeout`` (seconds)."""

    require_all: bool = False
    timeout: float = 600.0


def decided_data(approval: Approval) -> dict[str, Any]:
    return {
        "approval_id": approval.approval_id,
        "command_id": approval.command_id,
        "tool_name": approval.tool_name,
        "decision": approval.status,
        "reason": approval.reason,
        "arguments": approval.final_arguments,
        "decided_by": approval.decided_by,
        "decided_at": approval.decided_at,
    }


class Approvals:
    def __init__(self, bus: Bus, policy: ApprovalPolicy | None = None) -> None:
        self.bus = bus
        self.policy = policy or ApprovalPolicy()
        self._woken: dict[str, asyncio.Event] = {}
        # A decision made on another node sharing the database reaches this one as its
        # ApprovalDecided event, read back from the store (bus/cluster.py).
        bus.events.subscribe_read_back(self._on_read_back)

    def _on_read_back(self, event: Event) -> None:
        """Another node decided: the command is ``executing`` again in the store (so in this
        node's record of it, if it runs here), and its engine goes on."""
        if event.event_type != "ApprovalDecided" or event.source != "bus":  # a client's forgery: no
            return
        woken = self._woken.get(str(event.data.get("approval_id")))
        if woken is not None:
            self._set_live_status(str(event.data.get("command_id")), "waiting_approval", "executing")
            woken.set()

    # -- the engine's side ----------------------------------------------------------------

    async def checkpoint(self, command_id: str) -> tuple[Approval, dict[str, Any]] | None:
        """The latest approval of a command and the tool-loop state it saved, if any: a
        command run again after a restart resumes from it (engines/approval.py)."""

        def read(conn: sqlite3.Connection) -> tuple[Approval, dict[str, Any]] | None:
            row = conn.execute(
                f"SELECT {APPROVAL_COLUMNS}, state FROM approvals WHERE command_id = ?"
                " ORDER BY requested_at DESC, approval_id DESC LIMIT 1",
                (command_id,),
            ).fetchone()
            if row is None or row[14] is None:
                return None
            return row_to_approval(row[:14]), loads(row[14])

        return await self.bus.store.read(read)

    def new(
        self,
        command_id: str,
        session_id: str,
        engine_id: str | None,
        call_id: str,
        tool_name: str,
        arguments: dict[str, Any],
    ) -> Approval:
        """A request, not yet stored (``request`` stores it): the engine holds it before the
        write, so that a cancel during the write can withdraw it."""
        ts = now_iso()
        return Approval(
            approval_id=new_id(),
            session_id=session_id,
            command_id=command_id,
            engine_id=engine_id,
            call_id=call_id,
            tool_name=tool_name,
            arguments=arguments,
            status="pending",
            requested_at=ts,
            expires_at=to_iso(parse_iso(ts) + dt.timedelta(seconds=self.policy.timeout)),
        )

    async def request(self, approval: Approval, state: dict[str, Any]) -> None:
        """Store the request (``new``'s): the command waits. The write runs even if the caller
        is cancelled meanwhile (the store runs every write queued): such a caller withdraws it
        with ``cancel``, whose write comes after it."""
        a = approval

        def write(conn: sqlite3.Connection) -> Event:
            conn.execute(
                f"INSERT INTO approvals ({APPROVAL_COLUMNS}, state)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, NULL, NULL, NULL, NULL, ?)",
                (
                    a.approval_id,
                    a.session_id,
                    a.command_id,
                    a.engine_id,
                    a.call_id,
                    a.tool_name,
                    dumps(a.arguments),
                    a.requested_at,
                    a.expires_at,
                    dumps(state),
                ),
            )
            conn.execute(
                "UPDATE commands SET status = 'waiting_approval' WHERE command_id = ? AND status = 'executing'",
                (a.command_id,),
            )
            return insert_event(
                conn,
                a.session_id,
                "ApprovalRequested",
                {
                    "approval_id": a.approval_id,
                    "command_id": a.command_id,
                    "engine_id": a.engine_id,
                    "call_id": a.call_id,
                    "tool_name": a.tool_name,
                    "arguments": a.arguments,
                    "expires_at": a.expires_at,
                },
                source="engine",
                timestamp=a.requested_at,
            )

        event = await self.bus.store.write(write)
        self._set_live_status(a.command_id, "executing", "waiting_approval")
        self.bus.events.notify([event])

    async def resume(self, approval: Approval) -> None:
        """A command run again after a restart waits again for its pending approval: its
        status goes back to ``waiting_approval`` (no new request, no new event)."""

        def write(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE commands SET status = 'waiting_approval' WHERE command_id = ? AND status = 'executing'"
                " AND EXISTS (SELECT 1 FROM approvals WHERE approval_id = ? AND status = 'pending')",
                (approval.command_id, approval.approval_id),
            ).rowcount

        if await self.bus.store.write(write):
            self._set_live_status(approval.command_id, "executing", "waiting_approval")

    async def wait(self, approval: Approval) -> Approval:
        """Until the approval is decided (or expires: decided so here). A cancelled wait is
        the caller's to handle (``cancel``, or nothing at shutdown)."""
        woken = self._woken.setdefault(approval.approval_id, asyncio.Event())
        try:
            while True:
                # Cleared before the read, not after: a decision committed while the read was
                # in the reader's thread (the read did not see it) sets it after this.
                woken.clear()
                current = await self.get(approval.session_id, approval.approval_id)
                if current.status != "pending":
                    return current
                left = (parse_iso(current.expires_at) - dt.datetime.now(dt.UTC)).total_seconds()
                if left <= 0:
                    try:
                        return await self._decide(current, "expired", "no decision in time", None, "daemon")
                    except BusError:  # decided meanwhile
                        continue
                await wait_event(woken, left)
        finally:
            self._woken.pop(approval.approval_id, None)

    async def cancel(self, approval: Approval, reason: str) -> None:
        """The waiting command ends another way: the request is cancelled and the command
        is ``executing`` again, so the runner can record how it ended."""
        try:
            await self._decide(approval, "cancelled", reason, None, "daemon")
        except BusError:  # decided meanwhile: put the command back all the same
            await self.bus.store.write(
                lambda conn: conn.execute(
                    "UPDATE commands SET status = 'executing' WHERE command_id = ? AND status = 'waiting_approval'",
                    (approval.command_id,),
                )
            )

    # -- the API's side -------------------------------------------------------------------

    async def decide(
        self,
        session_id: str,
        approval_id: str,
        decision: str,
        reason: str | None,
        arguments: dict[str, Any] | None,
        who: str,
    ) -> Approval:
        approval = await self.get(session_id, approval_id)
        if arguments is not None and decision == "approve":
            await self._check_arguments(session_id, approval.tool_name, arguments)
        return await self._decide(approval, DECISIONS[decision], reason, arguments, who)

    async def get(self, session_id: str, approval_id: str) -> Approval:
        def read(conn: sqlite3.Connection) -> Approval:
            row = conn.execute(
                f"SELECT {APPROVAL_COLUMNS} FROM approvals WHERE approval_id = ? AND session_id = ?",
                (approval_id, session_id),
            ).fetchone()
            if row is None:
                fetch_session(conn, session_id)
                raise not_found("approval", approval_id=approval_id, session_id=session_id)
            return row_to_approval(row)

        return await self.bus.store.read(read)

    async def list(self, session_id: str, status: str | None = "pending") -> ApprovalList:
        def read(conn: sqlite3.Connection) -> ApprovalList:
            fetch_session(conn, session_id)
            where, params = "session_id = ?", [session_id]
            if status:
                where += " AND status = ?"
                params.append(status)
            rows = conn.execute(
                f"SELECT {APPROVAL_COLUMNS} FROM approvals WHERE {where} ORDER BY requested_at, approval_id",
                params,
            ).fetchall()
            return ApprovalList([row_to_approval(r) for r in rows], len(rows))

        return await self.bus.store.read(read)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> int:
        """Before the command queue is recovered: commands that were waiting for a decision
        when the daemon stopped are queued again, to resume waiting; and those decided whose
        engine had not taken the decision yet, to go on from it (see the module doc). On several
        nodes, only the sessions taken over from a node that is gone: the cluster does it then
        (``requeue``, bus/cluster_shared.py); the others' commands wait on their live nodes."""
        if self.bus.cluster.shared:
            return 0
        return await self.bus.store.write(lambda conn: requeue(conn, None))

    async def consume(self, approval: Approval) -> None:
        """The engine went on after the decision: its saved state is no longer needed (and a
        later run of the same command, a retry, must not resume from it). On several nodes the
        write checks this node still holds the session (``fence``): once another node took it
        over, that node may be carrying the decision out (``requeue``), and this one does not."""

        def write(conn: sqlite3.Connection) -> None:
            self.bus.cluster.fence(conn, approval.session_id)
            conn.execute("UPDATE approvals SET state = NULL WHERE approval_id = ?", (approval.approval_id,))

        await self.bus.store.write(write)

    # -- helpers --------------------------------------------------------------------------

    async def _check_arguments(self, session_id: str, tool_name: str, arguments: dict[str, Any]) -> None:
        tool = await self.bus.tools.get(session_id, tool_name)
        try:
            jsonschema.validate(arguments, tool.parameters, "arguments")
        except jsonschema.SchemaError as exc:
            raise BusError(ErrorCode.VALIDATION_ERROR, str(exc), {"field": exc.field, "issue": exc.issue}) from None

    async def _decide(
        self, approval: Approval, status: str, reason: str | None, arguments: dict[str, Any] | None, who: str
    ) -> Approval:
        ts = now_iso()
        final = (arguments if arguments is not None else approval.arguments) if status == "approved" else None
        decided = Approval(
            **{
                **{f: getattr(approval, f) for f in approval.__struct_fields__},
                "status": status,
                "decided_at": ts,
                "decided_by": who,
                "reason": reason,
                "final_arguments": final,
            }
        )

        def write(conn: sqlite3.Connection) -> Event:
            changed = conn.execute(
                "UPDATE approvals SET status = ?, decided_at = ?, decided_by = ?, reason = ?, final_arguments = ?"
                " WHERE approval_id = ? AND status = 'pending'",
                (status, ts, who, reason, dumps(final) if final is not None else None, approval.approval_id),
            ).rowcount
            if not changed:
                row = conn.execute(
                    "SELECT status FROM approvals WHERE approval_id = ?", (approval.approval_id,)
                ).fetchone()
                if row is None:  # its request was never stored (its write failed)
                    raise not_found("approval", approval_id=approval.approval_id)
                raise BusError(
                    ErrorCode.CONFLICT,
                    f"approval {approval.approval_id!r} was already decided ({row[0]})",
                    {"approval_id": approval.approval_id},
                )
            conn.execute(
                "UPDATE commands SET status = 'executing' WHERE command_id = ? AND status = 'waiting_approval'",
                (approval.command_id,),
            )
            return insert_event(conn, approval.session_id, "ApprovalDecided", decided_data(decided), timestamp=ts)

        event = await self.bus.store.write(write)
        self._set_live_status(approval.command_id, "waiting_approval", "executing")
        self.bus.events.notify([event])
        woken = self._woken.get(approval.approval_id)
        if woken is not None:
            woken.set()
        return decided

    def _set_live_status(self, command_id: str, old: str, new: str) -> None:
        """The runner's record of a live command follows the store (after the commit)."""
        job = self.bus.commands.runner.jobs.get(command_id)
        if job is not None and job.record.status == old:
            job.record.status = new


def requeue(conn: sqlite3.Connection, session_id: str | None, exclude: set[str] | frozenset[str] = frozenset()) -> int:
    """Inside a write, when the daemon that ran them is gone (a restart; on several nodes, a
    session taken over): the commands (of one session, or all) waiting for a decision, and
    those decided whose engine had not taken the decision yet (``UNTAKEN_DECISIONS``), are
    queued again, but those in ``exclude`` (running here). Returns how many."""
    where, params = (" AND session_id = ?", (session_id,)) if session_id is not None else ("", ())
    pending = conn.execute(
        f"SELECT DISTINCT command_id FROM approvals WHERE status = 'pending'{where}", params
    ).fetchall()
    untaken = conn.execute(UNTAKEN_DECISIONS + where.replace("session_id", "a.session_id"), params).fetchall()
    resumed = 0
    for ids, status in ((pending, "waiting_approval"), (untaken, "executing")):
        for (command_id,) in ids:
            if command_id not in exclude:
                resumed += conn.execute(
                    f"UPDATE commands SET status = 'queued' WHERE command_id = ? AND status = '{status}'",
                    (command_id,),
                ).rowcount
    return resumed
