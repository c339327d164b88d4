"""The HTTP + WebSocket edge (aiohttp): one route module per resource, the middlewares (guard,
errors, observability) and the OpenAPI document. Calls the bus; see docs/architecture.md."""
