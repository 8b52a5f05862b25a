"""A fault-injecting HTTP proxy in front of the real registry server, for the oci:// failure tests.

Everything is forwarded to the registry unchanged, except requests matching a queued fault, which get
instead: a status with a body of the test's choosing (500, 429, garbage JSON, a bare 404 as a misconfigured
proxy would send), or the real answer cut off after N bytes (the connection closes mid-body). Every
request is recorded (method, path, Range header) so tests can see retries and resumed downloads.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization", "host"}


@dataclass
class Fault:
    pattern: str  # regex over "METHOD /path?query"
    status: int | None = None
    body: bytes = b""
    headers: dict[str, str] | None = None
    cut_after: int | None = None  # forward the real answer, but close after this many body bytes
    times: int = 1


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: deque[Fault] = deque()
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def url(self, repo: str = "team/models") -> str:
        return f"oci://{self.host}/{repo}"

    def fail(self, pattern: str, **kw: Any) -> None:
        with self.lock:
            self.faults.append(Fault(pattern, **kw))

    def _take(self, line: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if re.search(fault.pattern, line):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                line = f"{self.command} {self.path}"
                with proxy.lock:
                    proxy.requests.append({"line": line, "range": self.headers.get("Range")})
                fault = proxy._take(line)
                if fault is not None and fault.status is not None:
                    self.send_response(fault.status)
                    for k, v in (fault.headers or {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(fault.body)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(fault.body)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                resp = requests.request(
                    self.command,
                    proxy.upstream + self.path,
                    headers=headers,
                    data=body,
                    stream=True,
                    allow_redirects=False,
                    timeout=60,
                )
                self.send_response(resp.status_code)
                for k, v in resp.headers.items():
                    if k.lower() not in HOP:
                        self.send_header(k, v.replace(proxy.upstream, f"http://{proxy.host}"))
                self.end_headers()
                if self.command == "HEAD":
                    return
                sent = 0
                for chunk in resp.raw.stream(65536, decode_content=False):
                    if fault is not None and fault.cut_after is not None and sent + len(chunk) > fault.cut_after:
                        self.wfile.write(chunk[: fault.cut_after - sent])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    self.wfile.write(chunk)
                    sent += len(chunk)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward  # noqa: N815

        return Handler

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
