"""Which key the CLI offers a TCP daemon it was not given a key for (jupyter's token file).

llmgined writes a key for the local CLI to ``<config dir>/local.key`` (0600). The CLI offers
it only to a daemon that is provably this user's own:

- the default target (what a bare ``llmgined`` with this user's config listens on), or
- an explicit loopback URL whose listening socket belongs to this uid (read from
  /proc/net/tcp{,6}). Another user's daemon on a loopback port never sees the key: it could
  replay it against ours.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

_LISTEN = "0A"


def read_key(path: str | Path) -> str | None:
    try:
        return Path(path).read_text("ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listener_uid(port: int) -> int | None:
    """The uid owning a socket listening on ``port`` (any address), per /proc/net; Linux only."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 8 or fields[3] != _LISTEN:
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                return int(fields[7])
    return None


def key_for(host: str | None, port: int | None, env: Mapping[str, str]) -> str | None:
    """The local CLI key, if the daemon at host:port is a loopback one owned by this uid."""
    if host is None or port is None or not _is_loopback(host):
        return None
    if listener_uid(port) != os.getuid():
        return None
    from llmgine_daemon.settings import get_paths

    return read_key(get_paths(env).local_key)
