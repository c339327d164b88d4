"""The HTTP + WebSocket edge (aiohttp): one route module per resource, the edge (api/edge.py:
guard, errors, observability in one middleware; routing by shape) and the OpenAPI document.
Calls the bus; see docs/architecture.md."""
