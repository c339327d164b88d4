"""Exit codes: the one list, shown in ``llmgine --help`` and docs/cli.md.

Scripts branch on these, so a value never changes meaning once released.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    ERROR = 1  # an API error or a failed command
    USAGE = 2  # bad flags or arguments (click's own code for usage errors)
    UNREACHABLE = 3  # the daemon is not running or cannot be reached
    NOT_FOUND = 4  # 404: no such session, engine, ...
    UNAUTHORIZED = 5  # 401/403: missing or wrong API key
    CONFLICT = 6  # 409: e.g. the session is closed
    TIMEOUT = 7  # the daemon did not answer (or start, or stop) in time
    INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


DESCRIPTIONS: dict[ExitStatus, str] = {
    ExitStatus.OK: "success",
    ExitStatus.ERROR: "error (API error, failed command)",
    ExitStatus.USAGE: "usage error (bad option or argument)",
    ExitStatus.UNREACHABLE: "daemon not running or unreachable",
    ExitStatus.NOT_FOUND: "not found (404)",
    ExitStatus.UNAUTHORIZED: "unauthorized (401/403)",
    ExitStatus.CONFLICT: "conflict (409)",
    ExitStatus.TIMEOUT: "timed out",
    ExitStatus.INTERRUPTED: "interrupted (Ctrl-C)",
}


def http_to_exit_status(status: int) -> ExitStatus:
    """Map an HTTP error status to the exit code a script can branch on."""
    if status == 404:
        return ExitStatus.NOT_FOUND
    if status in (401, 403):
        return ExitStatus.UNAUTHORIZED
    if status == 409:
        return ExitStatus.CONFLICT
    if status in (408, 504):
        return ExitStatus.TIMEOUT
    return ExitStatus.ERROR


def describe() -> str:
    return "\n".join(f"  {int(code):>3}  {DESCRIPTIONS[code]}" for code in ExitStatus)
