"""Secrets the daemon keeps for its own use (provider API keys): ``llmgine secret set NAME``.

The daemon reads provider keys from *its* environment, which is not the shell a user exports
``OPENAI_API_KEY`` in; a secret set through the API is what a provider falls back to when the
environment and the config file have none (looked up by the variable's name, so
``llmgine secret set OPENAI_API_KEY`` is all it takes).

Stored in ``<config dir>/secrets.json``, mode 0600 (written atomically, ``write_private``),
never returned by the API, never logged; out of the sandbox's view like the rest of
LLMGINE_HOME. Names are environment-variable names: ``[A-Z_][A-Z0-9_]{0,63}``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path

from llmgine_daemon.protocol import now_iso
from llmgine_daemon.protocol.grammar import MAX_SECRET, SECRET_NAME_PATTERN, SECRET_VALUE_PATTERN
from llmgine_daemon.settings import clear_stale_temps, write_private

log = logging.getLogger("llmgine.secrets")

NAME = re.compile(SECRET_NAME_PATTERN)
MAX_VALUE = MAX_SECRET
VALUE = re.compile(SECRET_VALUE_PATTERN)  # one line of text, no control characters
MAX_SECRETS = 100


class SecretsUnreadable(Exception):
    """The secrets file is there but is not a JSON object (a partial write, a hand edit)."""


class SecretStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        # A copy of the secrets that a `kill -9` in the middle of a write left (its temporary
        # file) is removed when the daemon starts, not at the next `secret set` only.
        clear_stale_temps(path)
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int], dict[str, dict[str, str]]] | None = None

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            stat = self.path.stat()
            mtime = (stat.st_mtime_ns, stat.st_ino)  # a write replaces the file: a new inode
        except FileNotFoundError:
            return {}
        if self._cache is not None and self._cache[0] == mtime:
            return self._cache[1]
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            # Never read as "no secrets": the next set would write the file over with only the
            # new one, and every other secret would be gone for good.
            raise SecretsUnreadable(
                f"{self.path} cannot be read ({exc.__class__.__name__}); nothing was changed: fix the file"
                " (JSON: {NAME: {value, updated_at}}) or remove it and set the secrets again"
            ) from None
        entries = (
            {k: v for k, v in data.items() if isinstance(v, dict) and NAME.match(k)} if isinstance(data, dict) else {}
        )
        self._cache = (mtime, entries)
        return entries

    def names(self) -> list[tuple[str, str]]:
        """(name, updated_at) of every secret, by name."""
        return sorted((name, entry.get("updated_at", "")) for name, entry in self._read().items())

    def get(self, name: str) -> str | None:
        try:
            value = self._read().get(name, {}).get("value")
        except SecretsUnreadable as exc:
            log.warning("secrets: %s", exc)
            return None
        return value if isinstance(value, str) and value else None

    def set(self, name: str, value: str) -> str:
        with self._lock:
            entries = dict(self._read())
            updated_at = now_iso()
            entries[name] = {"value": value, "updated_at": updated_at}
            write_private(self.path, json.dumps(entries))
            self._cache = None
            return updated_at

    def delete(self, name: str) -> bool:
        with self._lock:
            entries = dict(self._read())
            if entries.pop(name, None) is None:
                return False
            write_private(self.path, json.dumps(entries))
            self._cache = None
            return True
