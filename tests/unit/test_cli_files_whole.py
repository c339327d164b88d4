"""The files the CLI writes are replaced whole, whoever reads or writes beside it.

Two `llmgine config set` at once (write_config_value in two processes), a reader beside them.

Both used to write `<name>.tmp`: one truncated the file the other was renaming into place, so
config.toml was for a moment empty or half-written (a crash then, or a daemon starting then,
found it so), the other's rename failed (FileNotFoundError), and each read-modify-write could
write over the other's key. Now each write has a temporary file of its own and the two edits
take turns (a lock on the directory): every read finds a whole file, every write succeeds,
and both keys end with their last value. (A writer killed mid-write leaves the old file whole
and its temporary file, which the next `config set` removes.)
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tomllib
import traceback
from pathlib import Path

from llmgine_daemon.settings import get_paths, write_config_value

ROUNDS = 60
KEYS = ("server.shutdown_timeout", "database.busy_timeout")


def _writer(path: str, key: str, failures: multiprocessing.Queue) -> None:
    try:
        for i in range(1, ROUNDS + 1):
            write_config_value(Path(path), key, i)
    except BaseException:  # noqa: BLE001 - reported to the test
        failures.put(traceback.format_exc())


def test_two_config_writers_at_once_lose_nothing_and_never_leave_a_broken_file(tmp_path):
    path = tmp_path / "config" / "config.toml"
    path.parent.mkdir()
    (path.parent / ".config.toml.k1ll3d_x.tmp").write_text("[server]\nshutdown_")  # a writer killed mid-write
    write_config_value(path, KEYS[0], 0)
    ctx = multiprocessing.get_context("fork")
    failures = ctx.Queue()
    writers = [ctx.Process(target=_writer, args=(str(path), key, failures)) for key in KEYS]
    for w in writers:
        w.start()
    broken = []
    while any(w.is_alive() for w in writers):
        text = path.read_text()
        try:
            tomllib.loads(text)
            assert "server" in text
        except (tomllib.TOMLDecodeError, AssertionError):
            broken.append(text)
    for w in writers:
        w.join(60)
    assert failures.empty(), failures.get()
    assert not broken, broken[:3]
    doc = tomllib.loads(path.read_text())
    assert (doc["server"]["shutdown_timeout"], doc["database"]["busy_timeout"]) == (ROUNDS, ROUNDS)
    assert os.listdir(path.parent) == ["config.toml"]  # no temporary file left, none of the killed one's


def _starts(runtime: str, rounds: int) -> None:
    from llmgine_cli.daemonctl import DaemonFlags, save_args

    paths = get_paths({"LLMGINE_HOME": runtime})
    for i in range(rounds):
        save_args(paths, DaemonFlags(port=8000 + i), os.getpid(), "unix:///x.sock")


def test_the_daemon_start_record_is_never_seen_half_written(tmp_path):
    # `daemon start` records its flags for `daemon restart` (llmgined.args.json): written in
    # place (truncated, then written), a start killed between the two left an empty file, and
    # the restart went without the flags (`--port` gone). A reader beside a writer sees it so.
    from llmgine_cli.daemonctl import load_flags

    paths = get_paths({"LLMGINE_HOME": str(tmp_path)})
    paths.runtime_dir.mkdir(parents=True, mode=0o700)
    _starts(str(tmp_path), 1)
    writer = multiprocessing.get_context("fork").Process(target=_starts, args=(str(tmp_path), 400))
    writer.start()
    lost = 0
    while writer.is_alive():
        flags = load_flags(paths)
        lost += flags is None or flags.port is None
    writer.join(60)
    assert writer.exitcode == 0 and lost == 0
    assert load_flags(paths).port == 8399


def _adds(home: str, prefix: str, failures: multiprocessing.Queue) -> None:
    from typer.testing import CliRunner

    from llmgine_cli.app import app

    runner = CliRunner()
    for i in range(CONTEXTS):
        args = ["context", "add", f"{prefix}{i}", "--url", "http://127.0.0.1:9", "-q"]
        result = runner.invoke(app, args, env={"LLMGINE_HOME": home})
        if result.exit_code != 0:
            failures.put(result.output + repr(result.exception))
            return


CONTEXTS = 25


def test_two_context_adds_at_once_keep_both(tmp_path):
    # contexts.json (which holds the contexts' API keys) was read, changed and written by each
    # `llmgine context add` on its own: two at once, and one's acknowledged context was gone.
    ctx = multiprocessing.get_context("fork")
    failures = ctx.Queue()
    adders = [ctx.Process(target=_adds, args=(str(tmp_path), p, failures)) for p in ("a", "b")]
    for a in adders:
        a.start()
    for a in adders:
        a.join(120)
    assert failures.empty(), failures.get()
    saved = json.loads((tmp_path / "config" / "contexts.json").read_text())["contexts"]
    assert sorted(saved) == sorted(f"{p}{i}" for p in "ab" for i in range(CONTEXTS))
