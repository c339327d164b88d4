"""Documents the code cites must be in the repository: DESIGN.md and api-spec.md never were
(docs/architecture.md is where the design is written down)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MISSING = ("DESIGN.md", "api-spec.md")


def _tracked() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist): every file
        names = [
            str(p.relative_to(ROOT))
            for p in ROOT.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") or part == "site-packages" for part in p.relative_to(ROOT).parts)
        ]
    return [ROOT / n for n in names if n.endswith((".py", ".md", ".toml", ".txt", ".rst"))]


def test_no_reference_to_a_document_that_is_not_in_the_repository():
    this = Path(__file__).resolve()
    found = []
    for path in _tracked():
        if path.resolve() == this or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for line_no, line in enumerate(text.splitlines(), 1):
            found += [f"{path.relative_to(ROOT)}:{line_no}: {name}" for name in MISSING if name in line]
    assert not found, "references to documents not in the repository:\n" + "\n".join(found)


# A repository path as the code and the docs cite it: "bus/commands/runner.py",
# "docs/streams.md", "llmgine_daemon/store/db.py" (at least one folder, then a file).
_CITED = re.compile(r"(?<![\w/.:-])((?:[a-z_][a-z0-9_]*/)+[a-z_][a-z0-9_]*\.(?:py|md))\b")
# Where a cited path may start: the repository, the daemon's package (cited by its import
# name or its folder), its subpackages, the CLI, the tests, or the citing file's own folder.
_BASES = ("", "daemon", "daemon/bus", "daemon/bus/commands", "daemon/engines", "llmgine_cli", "tests")


def _exists(cited: str, citing: Path) -> bool:
    if cited.startswith("llmgine_daemon/"):
        cited = "daemon/" + cited.removeprefix("llmgine_daemon/")
    candidates = [ROOT / base / cited for base in _BASES] + [citing.parent / cited]
    return any(c.exists() for c in candidates)


def test_every_cited_repository_path_exists():
    """A file renamed or moved leaves no docstring or document pointing at its old path (the
    CHANGELOG, which records the renames, excepted)."""
    this = Path(__file__).resolve()
    found = []
    for path in _tracked():
        if path.resolve() == this or path.name == "CHANGELOG.md" or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for line_no, line in enumerate(text.splitlines(), 1):
            found += [
                f"{path.relative_to(ROOT)}:{line_no}: {cited}"
                for cited in _CITED.findall(line)
                if not _exists(cited, path)
            ]
    assert not found, "paths cited that are not in the repository:\n" + "\n".join(found)
