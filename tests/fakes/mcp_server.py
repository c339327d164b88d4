"""A real MCP server built with the official SDK (``mcp.server.mcpserver.MCPServer``), for the
MCP tests: ``python mcp_server.py`` speaks stdio, ``python mcp_server.py --http PORT`` serves
streamable HTTP on 127.0.0.1:PORT/mcp.

Tools: ``add(a, b)``, ``whoami()`` (the process's view: pid, env var TOKEN, whether it can
read PROBE_PATH and reach 127.0.0.1:PROBE_PORT, whether it may open an AF_VSOCK socket, its
seccomp mode), ``fail(message)`` (a tool error) and
``crash()`` (the process exits), ``lookup.record(key)`` and ``lookup_record(key)`` (names a
model is offered alike).
At start it writes one line to stderr holding $TOKEN (the daemon must redact it in its log).
"""

from __future__ import annotations

import errno
import os
import socket
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

app = MCPServer("fake")


@app.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@app.tool()
def whoami() -> dict[str, object]:
    """What this process sees of the machine."""
    try:  # a port the test listens on, on the host's loopback
        socket.create_connection(("127.0.0.1", int(os.environ.get("PROBE_PORT", "9"))), timeout=2).close()
        network = True
    except OSError:
        network = False
    try:  # vsock: refused (EPERM) by the sandbox's seccomp filter
        socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
        vsock = "ok"
    except OSError as exc:
        vsock = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    status = open("/proc/self/status").read()
    return {
        "pid": os.getpid(),
        "vsock": vsock,
        "seccomp": status.split("Seccomp:", 1)[1].split()[0] if "Seccomp:" in status else None,
        "token": os.environ.get("TOKEN"),
        "path_visible": os.path.exists(os.environ.get("PROBE_PATH", "/nonexistent")),
        "reaches_port": network,
    }


@app.tool()
def fail(message: str) -> str:
    """Always fails, with this message."""
    raise ToolError(message)


@app.tool()
def crash() -> str:
    """Ends the server's process."""
    os._exit(3)


# Two names a model is offered alike: providers allow no "." in a function name, so both
# would be fake-lookup_record.
@app.tool(name="lookup.record")
def lookup_dotted(key: str) -> str:
    """Look a record up (the dotted one)."""
    return f"dotted:{key}"


@app.tool(name="lookup_record")
def lookup_plain(key: str) -> str:
    """Look a record up (the plain one)."""
    return f"plain:{key}"


if __name__ == "__main__":
    print(f"fake mcp server starting, token={os.environ.get('TOKEN')}", file=sys.stderr, flush=True)
    if len(sys.argv) > 2 and sys.argv[1] == "--http":
        from mcp.server.transport_security import TransportSecuritySettings

        # rebound.invalid: the name the DNS-rebinding test resolves (to 127.0.0.1) itself.
        hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*", "rebound.invalid:*"]
        security = TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts)
        app.run("streamable-http", port=int(sys.argv[2]), transport_security=security)
    else:
        app.run()
