"""``python -m llmgine_daemon`` and the ``llmgined`` console script (pyproject.toml).

The server's modules are imported inside ``main``: Ctrl-C while they load (a second or two
on a loaded machine) is an exit 0 with nothing printed, not a traceback from an import."""

from __future__ import annotations


def main() -> int:
    try:
        from llmgine_daemon.server import main as serve
    except KeyboardInterrupt:  # nothing started yet: stop as quietly
        return 0
    return serve()


if __name__ == "__main__":
    raise SystemExit(main())
