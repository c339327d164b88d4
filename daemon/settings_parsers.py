"""A setting's record (``Setting``), and the parsers settings' values go through (from TOML,
the environment or a flag): each takes what was given and returns the typed value, or raises
ValueError saying what was expected.

Only the standard library: the CLI imports it through ``settings.py``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Where a value came from, weakest first.
SOURCES = ("default", "file", "env", "flag")


@dataclass(frozen=True)
class Setting:
    key: str
    env: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    secret: bool = False


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected a boolean (true/false)")


def json_object(value: Any) -> dict[str, Any]:
    """A table (config file) or a JSON object (environment) whose values are objects."""
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError as exc:
            raise ValueError(f"expected a JSON object: {exc}") from None
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, dict) for k, v in value.items()):
        return dict(value)
    raise ValueError("expected an object of objects ({name: {...}})")


def parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError("expected an integer")


def parse_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError("expected a string")


def parse_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ValueError("expected a list of strings (or a comma-separated string)")


def normalize_origin(value: str) -> str | None:
    """``scheme://host[:port]`` with http(s)' default ports dropped, or None (``null``, junk).
    Other schemes with a host are origins too: a browser extension's page
    (``chrome-extension://ID``) or an app's webview (``tauri://localhost``) sends one."""
    try:
        parts = urllib.parse.urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or parts.scheme == "file" or not parts.hostname:
        return None  # (a file:// page's Origin is "null")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    host = parts.hostname.lower()
    shown = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return f"{parts.scheme}://{shown}" + (f":{port}" if port and port != default else "")


def origins(value: Any) -> list[str]:
    """security.cors_origins: browser origins, each as the browser sends it. ``*`` or an entry
    that is no origin (``localhost:3000``, a URL with a path) is refused where it is given
    (``config set``, the file, the environment): it would be ignored, and its page refused with
    403 without a word why."""
    listed = parse_list(value)
    for item in listed:
        if item.strip() == "*":
            raise ValueError("'*' is not allowed (any web page could drive an API that runs code); list the origins")
        if normalize_origin(item) is None:
            raise ValueError(
                f"{item!r} is not an origin; write scheme://host[:port] as the browser sends it, "
                "e.g. http://localhost:3000 (no path)"
            )
    return listed


def choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = parse_str(value)
        if text.lower() not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return text.lower()

    return parse


_LEVEL = choice("debug", "info", "warning", "error", "critical")
_LEVEL_ALIASES = {"warn": "warning", "fatal": "critical"}  # as protocol.system.LEVEL_ALIASES


def log_level(value: Any) -> str:
    """A log level in any case; ``warn`` and ``fatal`` are taken too, as Python's logging, most
    log libraries and ``POST /api/observability/logs`` take them."""
    text = parse_str(value).lower()
    return _LEVEL(_LEVEL_ALIASES.get(text, text))


def port(value: Any) -> int:
    number = parse_int(value)
    if not 0 <= number <= 65535:
        raise ValueError("expected a port number from 0 to 65535")
    return number


# The largest values a setting takes: past them a count no longer fits SQLite's 64-bit
# integers (2**53 also keeps it exact in JSON), and a time no longer fits a timestamp or a
# timeout in milliseconds (1e308 seconds passed as "finite" and overflowed at start).
MAX_COUNT = 2**53
MAX_SECONDS = 1e9  # about 31 years
MAX_DAYS = 36_500  # about 100 years


def positive(value: Any) -> int:
    number = parse_int(value)
    if not 0 <= number <= MAX_COUNT:
        raise ValueError(f"expected a non-negative integer, at most {MAX_COUNT}")
    return number


# The highest uid a range may reach: (uid_t)-1 is "no change" to setresuid.
MAX_UID = 2**32 - 2


def uid_bounds(text: str) -> tuple[int, int] | None:
    """``sandbox.uids``'s first and last uid, or None for ``none`` (or empty): off."""
    if text.strip().lower() in ("", "none"):
        return None
    first, dash, last = text.strip().partition("-")
    if not dash or not first.strip().isdigit() or not last.strip().isdigit():
        raise ValueError("expected a range of uids FIRST-LAST (e.g. 1879048192-1879052287), or none")
    low, high = int(first), int(last)
    if not 1 <= low <= high <= MAX_UID:
        raise ValueError(f"expected 1 <= FIRST <= LAST <= {MAX_UID}")
    return low, high


def uid_range(value: Any) -> str:
    bounds = uid_bounds(parse_str(value))
    return f"{bounds[0]}-{bounds[1]}" if bounds else "none"


def retention_days(value: Any) -> int:
    """Whole days to keep something, 0 for no limit."""
    number = parse_int(value)
    if not 0 <= number <= MAX_DAYS:
        raise ValueError(f"expected a number of days from 0 to {MAX_DAYS}")
    return number


def _seconds(value: Any, unit: str, most: float) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number of {unit}")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number of {unit}") from None
    if not 0 < number <= most:  # NaN fails too
        raise ValueError(f"expected a positive number of {unit}, at most {most:g}")
    return number


def positive_float(value: Any) -> float:
    return _seconds(value, "seconds", MAX_SECONDS)


def days(value: Any) -> float:
    return _seconds(value, "days", MAX_DAYS)


def fraction(value: Any) -> float:
    """A share between 0 and 1 (``0.01``), or a percentage (``1%``)."""
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, bool):
        raise ValueError("expected a number between 0 and 1")
    scale = 1.0
    if isinstance(text, str) and text.endswith("%"):
        text, scale = text[:-1].strip(), 0.01
    try:
        number = float(text) * scale
    except (TypeError, ValueError):
        raise ValueError("expected a number between 0 and 1, or a percentage such as 1%") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError("expected a number between 0 and 1, or a percentage such as 1%")
    return number


def milliseconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number of milliseconds")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError("expected a number of milliseconds") from None
    if not 0.0 <= number < float("inf"):
        raise ValueError("expected a non-negative number of milliseconds")
    return number


def url(value: Any) -> str:
    text = parse_str(value).strip()
    if not text.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return text.rstrip("/")


def env_name(value: Any) -> str:
    text = parse_str(value).strip()
    if not text or not all(c.isalnum() or c == "_" for c in text):
        raise ValueError("expected an environment variable name")
    return text


def prices(value: Any) -> dict[str, list[float]]:
    """Model prices in USD per million tokens: a TOML table (or, in the environment, a JSON
    object) of ``model = [input, output]`` or ``[input, output, cached_input]``."""
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise ValueError('expected a JSON object such as {"gpt-4o": [2.5, 10, 1.25]}') from None
    if not isinstance(value, dict):
        raise ValueError("expected a table of model = [input, output, cached_input] (USD per million tokens)")
    table: dict[str, list[float]] = {}
    for model, price in value.items():
        ok = (
            isinstance(price, list)
            and len(price) in (2, 3)
            and all(isinstance(p, (int, float)) and not isinstance(p, bool) and p >= 0 for p in price)
        )
        if not ok or not model:
            raise ValueError(f"{model!r}: expected [input, output] or [input, output, cached_input], non-negative")
        table[str(model)] = [float(p) for p in price]
    return table
