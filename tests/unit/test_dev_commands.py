"""The API contract's development commands work here: `pip install -r requirements.txt`
installs what `pip install -e '.[test]'` does, and `pytest --cov` is available."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_requirements_txt_is_the_editable_install_with_the_test_extra():
    lines = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines == ["-e .[test]"]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "test" in extras


def test_pytest_cov_is_in_the_test_extra_and_installed():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.replace(" ", "").startswith("pytest-cov") for req in extras["test"])
    assert importlib.util.find_spec("pytest_cov") is not None
