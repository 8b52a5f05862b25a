"""The stable endpoint in front of blue/green model servers: a small HTTP/1.1 reverse proxy.

Why it exists: each model server listens on its own port, so "traffic moves to the new version" needs
something clients talk to that outlives a server. The `local` target runs this as a detached process,
the `docker` target as a container of the serving image; clients use its address as the deployment's
endpoint, and a rollout only rewrites its routes.

Routes are a JSON file, `{"generation": N, "primary": "HOST:PORT", "canary": "HOST:PORT" | null}`,
re-read when it changes (a target writes it atomically, or puts it into the container); once applied,
the generation is written to `FILE.applied`, so a target knows when the old server no longer gets new
requests and may be stopped.

With a canary set (the SLO watch), every request goes to the canary first, and a canary answer of 5xx or
a dropped connection is retried once on the primary, the version that was serving before: inference
requests have no side effects, so a client sees the old version's answer instead of the new version's
error, while the new server's own metrics still count the failure the SLO watch judges. A primary that
drops a request (it was being stopped) is retried on the current primary when the routes moved meanwhile.

Standard library only (it runs in any serving image): Content-Length bodies (V2 clients send them),
keep-alive on both sides, a pool of idle connections per backend.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
UPSTREAM_TIMEOUT_S = 120.0
POLL_S = 0.05


class BackendError(Exception):
    """No response came back from a backend (refused, reset, closed, timed out)."""


def _reply(status: int, reason: str, message: str, close: bool = True) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return lines[0], headers


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class Router:
    def __init__(self, routes_path: Path) -> None:
        self.routes_path = routes_path
        self.routes: dict[str, Any] = {}
        self.idle: dict[str, list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}
        self._seen: tuple[int, int] | None = None

    def reload(self) -> None:
        """Apply the routes file when it changed, then acknowledge its generation."""
        try:
            st = self.routes_path.stat()
        except OSError:
            return
        key = (st.st_ino, st.st_mtime_ns)
        if key == self._seen:
            return
        try:
            routes = json.loads(self.routes_path.read_text())
        except (OSError, ValueError):
            return  # half-written by a writer that does not rename: read it again on the next poll
        if not isinstance(routes, dict) or not isinstance(routes.get("primary"), str):
            return
        self._seen = key
        self.routes = routes
        keep = {routes["primary"], routes.get("canary")}
        for addr in [a for a in self.idle if a not in keep]:
            for _, w in self.idle.pop(addr):
                w.close()
        ack = self.routes_path.with_name(self.routes_path.name + ".applied")
        tmp = ack.with_name(ack.name + ".tmp")
        tmp.write_text(str(routes.get("generation", 0)))
        os.replace(tmp, ack)

    async def watch(self) -> None:
        while True:
            self.reload()
            await asyncio.sleep(POLL_S)

    async def _exchange(self, addr: str, request: bytes, is_head: bool) -> tuple[int, bytes]:
        pool = self.idle.setdefault(addr, [])
        for attempt in range(2):
            fresh = not pool or attempt > 0
            if fresh:
                try:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(*_split(addr)), 10)
                except (TimeoutError, OSError) as exc:
                    raise BackendError(f"{addr}: {exc}") from None
            else:
                reader, writer = pool.pop()
            try:
                writer.write(request)
                await writer.drain()
                status, raw, keep = await asyncio.wait_for(self._response(reader, is_head), UPSTREAM_TIMEOUT_S)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                writer.close()
                if fresh:
                    raise BackendError(f"{addr} dropped the request") from None
                continue  # an idle connection the server had closed: once more on a new one
            if keep and addr in (self.routes.get("primary"), self.routes.get("canary")):
                self.idle.setdefault(addr, []).append((reader, writer))
            else:
                writer.close()
            return status, raw
        raise BackendError(f"{addr} dropped the request")

    @staticmethod
    async def _response(reader: asyncio.StreamReader, is_head: bool) -> tuple[int, bytes, bool]:
        head = await reader.readuntil(b"\r\n\r\n")
        first, headers = _headers(head)
        status = int(first.split(" ", 2)[1])
        keep = headers.get("connection", "").lower() != "close"
        if is_head or status in (204, 304) or 100 <= status < 200:
            return status, head, keep
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:
            body, keep = await reader.read(), False
        return status, head + body, keep

    async def forward(self, request: bytes, is_head: bool) -> bytes:
        primary, canary = self.routes.get("primary"), self.routes.get("canary")
        if not primary:
            return _reply(503, "Service Unavailable", "no model server is routed yet", close=False)
        if canary:
            try:
                status, raw = await self._exchange(canary, request, is_head)
                if status < 500:
                    return raw
            except BackendError:
                pass  # the stable version answers instead
        try:
            return (await self._exchange(primary, request, is_head))[1]
        except BackendError as exc:
            now = self.routes.get("primary")
            if now and now != primary:  # the routes moved while this request was with the old server
                with contextlib.suppress(BackendError):
                    return (await self._exchange(now, request, is_head))[1]
            return _reply(502, "Bad Gateway", f"the model server did not answer: {exc}")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    writer.write(_reply(431, "Request Header Fields Too Large", "request head too large"))
                    return
                first, headers = _headers(head)
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    writer.write(_reply(411, "Length Required", "send a Content-Length body"))
                    return
                try:
                    length = int(headers.get("content-length", "0"))
                except ValueError:
                    writer.write(_reply(400, "Bad Request", "bad Content-Length"))
                    return
                if length > MAX_BODY or length < 0:
                    writer.write(_reply(413, "Content Too Large", f"body over {MAX_BODY} bytes"))
                    return
                body = await reader.readexactly(length) if length else b""
                writer.write(await self.forward(head + body, first.startswith("HEAD ")))
                await writer.drain()
                if headers.get("connection", "").lower() == "close" or first.endswith("HTTP/1.0"):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


async def serve(host: str, port: int, routes: Path, port_file: Path | None) -> None:
    router = Router(routes)
    router.reload()
    watcher = asyncio.ensure_future(router.watch())
    server = await asyncio.start_server(router.handle, host, port, limit=MAX_HEAD, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    if port_file is not None:
        tmp = port_file.with_name(port_file.name + ".tmp")
        tmp.write_text(str(bound))
        os.replace(tmp, port_file)
    print(f"lepton-ci router on {host}:{bound}, routes from {routes}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    watcher.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lepton_ci.deploy.router", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--routes", type=Path, required=True, help="routes JSON file (re-read when it changes)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.routes, args.port_file))


if __name__ == "__main__":
    main()
