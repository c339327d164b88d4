"""A hostile MCP server for the tests, speaking MCP's JSON-RPC over stdio by hand (the SDK's
server would not announce what this one does): ``python mcp_hostile.py names`` announces
tools whose names break the daemon's grammar (empty, spaces, control characters, "/", "..",
65 characters, a leading ".", a trailing newline, a name twice), a 1 MB description and a
100 KB input schema, beside three good ones (``ok``, ``get-weather``, ``lookup.record``);
``python mcp_hostile.py many`` announces 3000 tools, 100 a page; ``huge`` 20,000 tools with
descriptions of 8,000 characters (160 MB), 100 a page. A call answers with the
tool's name.
"""

from __future__ import annotations

import json
import sys

SCHEMA = {"type": "object", "properties": {}}


def tool(name: str, description: str = "fine", schema: dict[str, object] | None = None) -> dict[str, object]:
    return {"name": name, "description": description, "inputSchema": schema or SCHEMA}


def tools(mode: str) -> list[dict[str, object]]:
    if mode == "many":
        return [tool(f"t{i}") for i in range(3000)]
    if mode == "huge":  # 100 a page: 200 pages of 100 descriptions of 8,000 characters
        return [tool(f"h{i}", "h" * 8_000) for i in range(20_000)]
    wide = {
        "type": "object",
        "properties": {f"p{i}": {"type": "string", "description": "x" * 100} for i in range(1000)},
    }
    return [
        tool("ok"),
        tool(""),
        tool("has space"),
        tool("ctl\x1b[31mred"),
        tool("a/b"),
        tool("a..b"),
        tool("x" * 65),
        tool(".dot"),
        tool("new\n"),
        tool("ok", "the second ok"),
        tool("big", "d" * 1_000_000),
        tool("wide", schema=wide),
        tool("get-weather"),
        tool("lookup.record"),
    ]


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "names"
    announced = tools(mode)
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        if "id" not in msg:
            continue  # a notification
        method, params = msg.get("method"), msg.get("params") or {}
        if method == "initialize":
            result: object = {
                "protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "hostile", "version": "1"},
            }
        elif method == "tools/list":
            start = int(params.get("cursor") or 0)
            page = announced[start : start + 100]
            result = {"tools": page}
            if start + 100 < len(announced):
                result["nextCursor"] = str(start + 100)
        elif method == "tools/call":
            result = {"content": [{"type": "text", "text": params.get("name")}]}
        else:
            result = {}
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
