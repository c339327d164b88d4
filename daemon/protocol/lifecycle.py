"""The command lifecycle beyond one session's queue: waiting for commands of any session
(``POST /api/commands/wait``) and the live queue view across sessions (``GET /api/commands``).

Only msgspec and the standard library may be imported here (see the package docstring).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from llmgine_daemon.protocol.bus import Command, CommandStatus, UnfinishedStatus
from llmgine_daemon.protocol.grammar import Id, Timestamp

MAX_WAIT_IDS = 1000
# One wait request holds the answer at most this long (the ``?wait`` maximum of other routes).
MAX_WAIT_TIMEOUT_S = 300.0


class CommandWait(msgspec.Struct, forbid_unknown_fields=True):
    """Wait for commands of any session the caller may see (a session token: its own)."""

    # The commands, and/or every command of a batch.
    command_ids: Annotated[list[Id], msgspec.Meta(max_length=MAX_WAIT_IDS)] = []
    batch_id: Id | None = None
    # Answer as soon as one (not all) of them reached the state.
    any: bool = False
    # The statuses to wait for (default: any terminal one). A command that finished without
    # reaching one of them ends the wait for it too (it never will).
    status: Annotated[list[CommandStatus], msgspec.Meta(max_length=16)] | None = None
    # Seconds to hold the answer; on expiry the answer has ``done: false``.
    timeout: Annotated[float, msgspec.Meta(ge=0, le=MAX_WAIT_TIMEOUT_S)] = 30.0


class CommandWaitResult(msgspec.Struct):
    commands: list[Command]
    # Whether the condition was met (all of them, or one with ``any``); false: timed out.
    done: bool
    # The ids that reached (or went past) the state waited for.
    reached: list[str]


class QueueItem(msgspec.Struct, kw_only=True):
    """A command not finished yet, as the live queue view shows it."""

    command_id: str
    session_id: str
    command_type: str
    status: UnfinishedStatus
    priority: str
    created_at: Timestamp
    started_at: Timestamp | None = None
    # 1 = next to run in its session (queued only; blocked and executing ones have none).
    position: int | None = None
    # Seconds since it was submitted until it started (or until now, if it has not).
    wait_s: float
    # Seconds it has been executing (executing only).
    run_s: float | None = None
    batch_id: str | None = None
    attempt: int = 1
    # A queued command waiting for its next attempt (retries): when it is due.
    retry_at: Timestamp | None = None


class CommandRetry(msgspec.Struct, forbid_unknown_fields=True):
    """Run finished commands of a session again (same id, ``attempt`` + 1): those named, or
    all its failed (``failed``) or dead-letter (``dead``) ones."""

    command_ids: Annotated[list[Id], msgspec.Meta(max_length=MAX_WAIT_IDS)] = []
    failed: bool = False
    dead: bool = False


class QueueView(msgspec.Struct):
    commands: list[QueueItem]
    # Unfinished commands matching the filter (the page is ``limit`` of them).
    total: int
    limit: int
    # Unfinished commands per status (of the sessions the caller may see), filter or not.
    counts: dict[str, int]
    # Commands that finished in the last 60 seconds, per final status.
    finished_last_minute: dict[str, int]
    # The sandbox pool's workers running user code now, and its size (keys only; else null).
    sandbox_busy: int | None = None
    sandbox_workers: int | None = None
    # The pool's state (keys only; else null), as in GET /api/status: standby until the daemon
    # has user code (no worker started yet, so busy/workers say nothing), starting, running,
    # failed or stopped.
    sandbox_state: str | None = None
