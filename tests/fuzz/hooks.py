"""schemathesis hooks for tests/fuzz/test_schemathesis.py (loaded with SCHEMATHESIS_HOOKS)."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def filter_query(ctx: Any, query: dict[str, Any] | None) -> bool:
    """No case repeats a query parameter (`?offset=%C2%91aT&offset=%2B0.0`). The daemon reads a
    repeated parameter as its last value, as FastAPI reads a scalar one (README "Errors"; no
    parameter in the document is an array), so such a request is valid when its last value is;
    schemathesis judges it by the earlier ones and reports the 200 as "schema-violating request
    accepted". The last-value rule has its own tests (tests/api/test_fastapi_parity.py)."""
    return not query or not any(isinstance(value, list) and len(value) > 1 for value in query.values())
