"""The serving image's HEALTHCHECK: GET /v2/health/ready on the port the server was started with.

A deploy target may start the image with its own `--host`/`--port` (tests run it on the host network with
`--port P`), so the port is read from the server's own command line (PID 1's), not baked into the image.
Standard library only: it runs every few seconds inside the container and must start fast.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_PORT = 8080


def server_address(cmdline: list[str]) -> tuple[str, int]:
    """(host to probe, port) from the server's arguments: its `--host` unless it binds every address."""
    host, port = "127.0.0.1", DEFAULT_PORT
    for i, arg in enumerate(cmdline):
        name, eq, value = arg.partition("=")
        if not eq and i + 1 < len(cmdline):
            value = cmdline[i + 1]
        if name == "--port" and value.isdigit():
            port = int(value)
        elif name == "--host" and value not in ("", "0.0.0.0", "::"):
            host = value
    return host, port


def main() -> int:
    try:
        cmdline = [a.decode() for a in Path("/proc/1/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        cmdline = []
    host, port = server_address(cmdline)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/v2/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - a fixed http URL on loopback
            return 0 if resp.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


if __name__ == "__main__":
    sys.exit(main())
