"""fakellm (PyPI, in the test extra): an OpenAI- and Anthropic-compatible mock server written
by someone else, run as a process on a free port with a two-turn tool script.

Our own fake (provider.py) is what most tests script; this one checks that the daemon speaks
to a server it was not written against, at the URLs its SDK conventions give
(engines/providers/urls.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from tests.clitools import free_port

# Each conversation is told apart by its first user message (fakellm's own rule), so tests give
# every run its own prompt.
CONFIG = """
rules:
  - name: answer
    when:
      tool_result_contains: temp_c
    respond:
      content: "It is 21 degrees in Melbourne."
  - name: call_weather
    when:
      tools_include: get_weather
    respond:
      tool_calls:
        - name: get_weather
          arguments: {location: Melbourne}
  - name: hello
    respond:
      content: "Hello from fakellm."
"""


class FakeLLM:
    def __init__(self, tmp: Path) -> None:
        self.config = tmp / "fakellm.yaml"
        self.config.write_text(CONFIG)
        self.port = free_port()
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> FakeLLM:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from fakellm.cli import main; main()",
                "serve",
                "--port",
                str(self.port),
                "--config",
                str(self.config),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.config.parent,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.stats()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError("fakellm did not start") from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.root_url}/_fakellm/stats", timeout=30) as resp:
            return json.loads(resp.read())

    def paths(self) -> dict[str, int]:
        """Requests served, by the API path they came to (all streamed, or it says so)."""
        recent = self.stats()["recent"]
        assert all(r["stream"] for r in recent), recent
        names = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
        return dict(Counter(names[r["api"]] for r in recent))
