"""Named daemons, as `docker context`: `llmgine context add prod --url http://db1:8000`, then
`llmgine context use prod` (or `LLMGINE_CONTEXT=prod`, or `--context prod` for one command).

They live in ``contexts.json`` in the config directory (next to config.toml; mode 0600, as a
context may hold an API key): ``{"current": NAME | null, "contexts": {NAME: {"url", "api_key"}}}``.
The daemon a command talks to, first match wins: --url, --context, LLMGINE_URL,
LLMGINE_CONTEXT, the current context, the local daemon. A context's daemon is never
auto-started (it is someone else's) and is never offered the local key.

On every call's path (target.py): without LLMGINE_CONTEXT, one stat of the file.
"""

from __future__ import annotations

import contextlib
import os

from llmgine_cli.errors import InvalidArgument, LlmgineError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from typing import Any

    from llmgine_cli.target import Target

DEFAULT = "default"  # the local daemon: `llmgine context use default`
FILE = "contexts.json"


def contexts_path(env: Mapping[str, str]) -> str:
    """<config dir>/contexts.json: $LLMGINE_HOME/config, else the platform's config dir."""
    home = env.get("LLMGINE_HOME")
    if home:
        return os.path.join(os.path.abspath(os.path.expanduser(home)), "config", FILE)
    xdg = env.get("XDG_CONFIG_HOME")
    if xdg and os.path.isabs(xdg) and env is not os.environ:
        return os.path.join(xdg, "llmgine", FILE)
    import platformdirs

    return os.path.join(platformdirs.user_config_dir("llmgine"), FILE)


def load(env: Mapping[str, str]) -> dict[str, Any]:
    path = contexts_path(env)
    try:
        with open(path, encoding="utf-8") as fh:
            _check_owner(path, os.fstat(fh.fileno()))
            text = fh.read()
    except FileNotFoundError:
        return {"current": None, "contexts": {}}
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}") from None
    import json

    try:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("contexts", {}), dict):
            raise ValueError("not an object with a contexts object")
    except ValueError as exc:
        raise InvalidArgument(f"{path} is damaged ({exc}): fix it or remove it") from None
    data.setdefault("contexts", {})
    data.setdefault("current", None)
    return data


def _check_owner(path: str, st: os.stat_result) -> None:
    """It says which daemon gets this user's requests (and their secrets): not a file another
    user owns or others may write (planted in a shared or a sudo-kept home), as llmgined
    refuses such a config.toml (settings.check_config_file_mode; not imported here: this runs
    on every call's path)."""
    if st.st_uid not in (os.getuid(), 0):
        raise LlmgineError(f"{path}: contexts file is owned by uid {st.st_uid}, not by you")
    if st.st_mode & 0o022:
        raise LlmgineError(
            f"{path}: contexts file is writable by others (mode {st.st_mode & 0o7777:04o}); run `chmod 600 {path}`"
        )


@contextlib.contextmanager
def editing(env: Mapping[str, str]) -> Iterator[dict[str, Any]]:
    """``with editing(env) as data:`` load, change ``data``, and it is saved when the block
    ends (not when it raises), under a lock on the config directory: two edits at once (two
    `llmgine context add`) take turns, and each keeps the other's change."""
    from pathlib import Path

    from llmgine_daemon.settings import dir_locked

    with dir_locked(Path(contexts_path(env)).parent):
        data = load(env)
        yield data
        save(env, data)


def save(env: Mapping[str, str], data: dict[str, Any]) -> str:
    """Write ``data`` (mode 0600, replaced whole and durably: a crash leaves the old file or
    the new; write_private, as the daemon's private files)."""
    import json
    from pathlib import Path

    from llmgine_daemon.settings import write_private

    path = contexts_path(env)
    _clear_old_temps(path)
    write_private(Path(path), json.dumps(data, indent=2) + "\n")
    return path


def _clear_old_temps(path: str) -> None:
    """``contexts.json.<pid>.tmp``: what an earlier CLI killed mid-write left (its own naming,
    before write_private): a copy of the API keys. Removed when that process is gone."""
    import re

    from llmgine_cli.daemonctl import pid_alive

    directory, name = os.path.split(path)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for entry in names:
        found = re.fullmatch(rf"{re.escape(name)}\.(\d+)\.tmp", entry)
        if found is None or pid_alive(int(found.group(1))):
            continue
        with contextlib.suppress(OSError):
            if not os.path.islink(os.path.join(directory, entry)):
                os.unlink(os.path.join(directory, entry))


def selected(env: Mapping[str, str], name: str | None = None) -> tuple[str, dict[str, Any]] | None:
    """The context in force: ``name`` (--context), else LLMGINE_CONTEXT, else the current one;
    None for the local daemon. A name that is not there is a usage error."""
    name = name or env.get("LLMGINE_CONTEXT") or None
    if name is None and not os.path.exists(contexts_path(env)):
        return None  # the common case: one stat
    data = load(env)
    name = name or data.get("current")
    if not name or name == DEFAULT:
        return None
    found = data["contexts"].get(name)
    if not isinstance(found, dict) or not isinstance(found.get("url"), str):
        raise InvalidArgument(f"no context {name!r}: `llmgine context ls` lists them")
    return name, found


def context_target(env: Mapping[str, str], name: str | None = None) -> Target | None:
    """The daemon of the context in force (with its API key), or None."""
    chosen = selected(env, name)
    if chosen is None:
        return None
    from llmgine_cli.target import parse_url

    target = parse_url(chosen[1]["url"])
    return target.replace(config_api_key=chosen[1].get("api_key") or None)


def complete_names(incomplete: str) -> list[str]:
    """Shell completion of a context's name (silent on a damaged file)."""
    try:
        names = [DEFAULT, *sorted(load(os.environ)["contexts"])]
    except InvalidArgument:
        return []
    return [name for name in names if name.startswith(incomplete)]
