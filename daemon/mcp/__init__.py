"""MCP tool servers at run time: starting and supervising their processes (``launch.py``), and
the connection to each server through the official ``mcp`` SDK (``connection.py``).

Between ``bus`` and ``sandbox`` in the layering: the bus (bus/mcp_servers.py) owns the
registrations and calls these; this package uses the sandbox's bubblewrap arguments. The SDK
is imported only when a server is connected, never when the daemon starts without one.
"""
