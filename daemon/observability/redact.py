"""Secrets never reach a log line: the last line of defence, after "never log a secret".

``RedactingFormatter`` rewrites the final text of every record (message, arguments and
traceback alike), so a credential that slipped into an exception or a URL is masked:

    lgk_<id>_<secret> / lgs_<id>_<secret>   keep the id (it names the key), mask the secret
    Bearer <anything>                       masked
    token=<anything> in a query string      masked
    llmgine.bearer.<token> (WS subprotocol) masked
    whsec_<base64> (a webhook's secret)     masked
    configured secrets (API_KEY_SECRET)     masked wherever they appear
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "********"
_PATTERNS = (
    re.compile(r"(lg[ks]_[0-9a-f]{12}_)[A-Za-z0-9_\-]+"),
    re.compile(r"((?i:bearer)[ =:]+)(?!\[redacted\]|\*{8})[^\s,'\"]+"),
    re.compile(r"([?&]token=)[^&\s'\"]+"),
    re.compile(r"(llmgine\.bearer\.)[^\s,'\"]+"),
    re.compile(r"((?i:x-session-token)['\"]?[:=]\s*['\"]?)[^\s,'\"]+"),
    re.compile(r"(whsec_)(?!\*{8})[A-Za-z0-9+/=]+"),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    return text


class RedactingFormatter(logging.Formatter):
    """Wraps another formatter (text or JSON) and masks credentials in its output."""

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.inner = inner
        self.secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record), self.secrets)


class RedactingFilter(logging.Filter):
    """Masks credentials in records of loggers we do not own (aiohttp's websocket logger
    warns with the client's offered subprotocols, which may carry a token)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the logging module's problem, not ours
            return True
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


_FILTER = RedactingFilter()
THIRD_PARTY_LOGGERS = ("aiohttp.websocket", "aiohttp.server", "aiohttp.access", "aiohttp.web", "aiohttp.client")


def install_filters() -> None:
    """Attach the filter to the third-party loggers (idempotent)."""
    for name in THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
