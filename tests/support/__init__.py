"""Test support: real HTTP stand-ins for the GitHub and GitLab APIs.

`StandIn` is the shared machinery: a ThreadingHTTPServer on 127.0.0.1 in a background thread, a record of
every request (kept in memory and, with `state=`, appended as JSON lines to a file so another process can
read it), contract violations (a test fails when there are any), and scripted faults per operation:

    standin.fail("issues/create-comment", 502, times=3)        # 5xx storm
    standin.fail("*", 429, retry_after=1)                       # any operation
    standin.fail(op, reset=True)                                # close the socket, no response, nothing done
    standin.fail(op, reset_after=True)                          # do the work, then close without a response
    standin.fail(op, secondary=True, retry_after=None)          # GitHub's secondary rate limit (403)
    standin.fail(op, ratelimit_reset=2)                         # x-ratelimit-remaining: 0, reset in 2 s

A subclass implements `route(request)`; see github_standin.py and gitlab_standin.py. Both are also
runnable as `python -m tests.support.<name>_standin --port P --state FILE` (prints the base URL, serves
until killed). Under `/_standin/` a running stand-in answers JSON control requests without auth:
GET requests, violations, comments?issue=N; POST faults ({"op":..., "status":..., ...}), seed
({"issue": N, "count": K}).
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

# Request headers worth keeping in the record (never Authorization, PRIVATE-TOKEN or JOB-TOKEN values).
RECORDED_HEADERS = ("user-agent", "accept", "content-type", "x-github-api-version")
SECRET_HEADERS = ("authorization", "private-token", "job-token")


@dataclass
class Fault:
    """One scripted failure for an operation, used `times` times in order."""

    status: int | None = None
    times: int = 1
    retry_after: float | str | None = None
    message: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False        # close the connection without a response, before doing anything
    reset_after: bool = False  # do the operation, then close the connection without a response
    delay: float = 0.0         # do the operation, then wait this long before responding (client timeouts)
    after: bool = False        # with status: do the operation, then answer with this error (a proxy's 502)
    secondary: bool = False    # GitHub secondary rate limit: 403 with its message
    ratelimit_reset: float | None = None  # primary rate limit: remaining 0, reset in this many seconds

    def describe(self) -> str:
        if self.reset:
            return "reset"
        if self.reset_after:
            return "reset-after"
        if self.after:
            return f"{self.status}-after"
        if self.secondary:
            return "secondary-rate-limit"
        if self.ratelimit_reset is not None:
            return "rate-limit"
        if self.delay and self.status is None:
            return f"delay {self.delay}s"
        return str(self.status)


@dataclass
class Request:
    """What a handler hands to `route`: method, path split from its query, parsed JSON body, headers."""

    method: str
    raw_path: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lower-case names
    raw_body: bytes
    body: Any = None
    body_error: str | None = None


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    after: Callable[[], None] | None = None  # unused hook for subclasses


class Abort(Exception):
    """Raised inside `route` to close the connection without a response (connection reset)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lepton-standin"
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _handle(self) -> None:
        standin: StandIn = self.server.standin  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        req = Request(method=self.command, raw_path=self.path, path=parts.path,
                      query=parse_qsl(parts.query, keep_blank_values=True),
                      headers={k.lower(): v for k, v in self.headers.items()}, raw_body=raw)
        if raw:
            ctype = req.headers.get("content-type", "")
            try:
                if "json" in ctype:
                    req.body = json.loads(raw)
                elif "x-www-form-urlencoded" in ctype:
                    req.body = dict(parse_qsl(raw.decode(), keep_blank_values=True))
                else:
                    req.body_error = f"unsupported Content-Type {ctype!r}"
            except (ValueError, UnicodeDecodeError) as exc:
                req.body_error = f"body is not valid JSON: {exc}"
        try:
            reply = standin.dispatch(req)
        except Abort:
            self._reset()
            return
        except Exception as exc:  # noqa: BLE001 - a stand-in bug must show as a violation, not hang the client
            standin.violation(f"stand-in crashed on {req.method} {req.path}: {type(exc).__name__}: {exc}")
            reply = Reply(500, {"message": "stand-in internal error"})
        payload = b"" if reply.body is None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        if reply.body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _reset(self) -> None:
        """Close with RST: the client sees a connection reset and no response at all."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True
        try:
            self.connection.close()
        except OSError:
            pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815 - stdlib naming


class StandIn:
    """Base class: server lifecycle, request record, violations, faults, control endpoints."""

    name = "stand-in"

    def __init__(self, *, state: str | Path | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.state = Path(state) if state else None
        self.lock = threading.RLock()
        self.requests: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.faults: dict[str, deque[Fault]] = {}
        self.sleep = time.sleep
        # bound now, so the URL (and objects that embed it) exist before start()
        self._server: ThreadingHTTPServer | None = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.standin = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------
    @property
    def origin(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        return f"http://{self.host}:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        """The API base URL clients use (origin plus any prefix)."""
        return self.origin

    def start(self) -> str:
        assert self._server is not None and self._thread is None, "a stand-in starts once"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self.name, daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            if self._thread is not None:
                self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "StandIn":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- record ----------------------------------------------------------------------------------------
    def violation(self, text: str) -> None:
        with self.lock:
            self.violations.append(text)

    def assert_clean(self) -> None:
        assert not self.violations, f"{self.name} contract violations:\n" + "\n".join(self.violations)

    def calls(self, op: str | None = None, method: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if (op is None or r.get("operation") == op)
                    and (method is None or r["method"] == method)]

    # ---- faults ----------------------------------------------------------------------------------------
    def fail(self, op: str, status: int | None = None, *, times: int = 1, **kw: Any) -> Fault:
        """Queue a fault for operation `op` (an operation id, or "*" for any)."""
        fault = Fault(status=status, times=times, **kw)
        if status is None and not (fault.reset or fault.reset_after or fault.secondary or fault.delay
                                   or fault.ratelimit_reset is not None):
            raise ValueError("a fault needs a status, reset, reset_after, delay, secondary or ratelimit_reset")
        with self.lock:
            self.faults.setdefault(op, deque()).append(fault)
        return fault

    def take_fault(self, op: str) -> Fault | None:
        with self.lock:
            for key in (op, "*"):
                queue = self.faults.get(key)
                if queue:
                    fault = queue[0]
                    fault.times -= 1
                    if fault.times <= 0:
                        queue.popleft()
                    return fault
        return None

    # ---- dispatch --------------------------------------------------------------------------------------
    def dispatch(self, req: Request) -> Reply:
        if req.path.startswith("/_standin/"):
            return self.control(req)
        entry: dict[str, Any] = {
            "t": round(time.time(), 3), "method": req.method, "path": req.raw_path, "route": req.path,
            "query": dict(req.query), "headers": {k: v for k, v in req.headers.items() if k in RECORDED_HEADERS},
            "auth": self.auth_kind(req.headers), "body": req.body, "operation": None, "status": None,
            "violations": [], "fault": None,
        }
        with self.lock:
            before = len(self.violations)
            entry["seq"] = len(self.requests) + 1
            self.requests.append(entry)  # visible at once; the state file gets it when it is answered
        reply: Reply | None = None
        try:
            reply = self.route(req, entry)
            return reply
        finally:  # a reset (Abort) is recorded too, with status None
            with self.lock:
                entry["violations"] = self.violations[before:]
                entry["status"] = reply.status if reply is not None else None
                if self.state is not None:
                    with open(self.state, "a", encoding="utf-8") as f:
                        f.write(json.dumps(entry) + "\n")

    @staticmethod
    def auth_kind(headers: dict[str, str]) -> str | None:
        """How the request authenticated, without the secret: 'Bearer', 'token', 'PRIVATE-TOKEN', ..."""
        if "authorization" in headers:
            return headers["authorization"].split(" ", 1)[0] or "?"
        for name in ("private-token", "job-token"):
            if name in headers:
                return name.upper()
        return None

    def apply_fault(self, fault: Fault, entry: dict[str, Any], error: Callable[[int, str], Reply]) -> Reply | None:
        """Before the operation: a reply for the fault, Abort for a reset, or None to go on."""
        entry["fault"] = fault.describe()
        if fault.reset:
            raise Abort()
        if fault.reset_after or fault.after or (fault.delay and fault.status is None):
            return None  # handled after the operation by `after_fault`
        headers = dict(fault.headers)
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after) if isinstance(fault.retry_after, str) else str(int(fault.retry_after))
        if fault.ratelimit_reset is not None:
            headers.update({"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0", "x-ratelimit-used": "5000",
                            "x-ratelimit-reset": str(int(time.time() + fault.ratelimit_reset))})
            reply = error(fault.status or 403, fault.message or self.rate_limit_message())
        elif fault.secondary:
            reply = error(fault.status or 403, fault.message or self.secondary_message())
        else:
            reply = error(fault.status or 500, fault.message or self.status_message(fault.status or 500))
        reply.headers.update(headers)
        if fault.delay:
            self.sleep(fault.delay)
        return reply

    def after_fault(self, fault: Fault | None, reply: Reply, error: Callable[[int, str], Reply]) -> Reply:
        """After the operation ran: delay, reset, or replace the answer with an error, as scripted."""
        if fault is not None and fault.delay:
            self.sleep(fault.delay)
        if fault is not None and fault.reset_after:
            raise Abort()
        if fault is not None and fault.after and fault.status:
            return error(fault.status, fault.message or self.status_message(fault.status))
        return reply

    def rate_limit_message(self) -> str:
        return "API rate limit exceeded"

    def secondary_message(self) -> str:
        return "You have exceeded a secondary rate limit."

    def status_message(self, status: int) -> str:
        from http import HTTPStatus

        try:
            return HTTPStatus(status).phrase
        except ValueError:
            return "Error"

    # ---- control endpoints (no auth, not recorded) -----------------------------------------------------
    def control(self, req: Request) -> Reply:
        what = req.path[len("/_standin/"):].strip("/")
        q = dict(req.query)
        if req.method == "GET" and what == "requests":
            with self.lock:
                return Reply(200, list(self.requests))
        if req.method == "GET" and what == "violations":
            with self.lock:
                return Reply(200, list(self.violations))
        if req.method == "GET" and what == "comments":
            return Reply(200, self.comments(int(q["issue"])) if "issue" in q else [])
        if req.method == "POST" and what == "faults" and isinstance(req.body, dict):
            spec = dict(req.body)
            op = spec.pop("op", "*")
            self.fail(op, spec.pop("status", None), **spec)
            return Reply(201, {"ok": True})
        if req.method == "POST" and what == "seed" and isinstance(req.body, dict):
            self.seed(int(req.body["issue"]), int(req.body.get("count", 1)))
            return Reply(201, {"ok": True})
        return Reply(404, {"message": f"unknown control request {req.method} {req.path}"})

    # ---- for subclasses --------------------------------------------------------------------------------
    def route(self, req: Request, entry: dict[str, Any]) -> Reply:
        raise NotImplementedError

    def comments(self, issue: int) -> list[dict[str, Any]]:
        raise NotImplementedError

    def seed(self, issue: int, count: int) -> None:
        raise NotImplementedError


def parse_fault(text: str) -> tuple[str, dict[str, Any]]:
    """CLI fault syntax: OP=SPEC[xN], SPEC one of STATUS, STATUS:RETRY_AFTER, reset, reset-after,
    secondary, secondary:RETRY_AFTER, ratelimit:SECONDS. E.g. issues/create-comment=502x3, *=429:1."""
    op, _, spec = text.partition("=")
    if not spec:
        raise argparse.ArgumentTypeError(f"--fault {text!r}: expected OP=SPEC")
    times = 1
    if "x" in spec:
        spec, _, n = spec.rpartition("x")
        times = int(n)
    kind, _, arg = spec.partition(":")
    kw: dict[str, Any] = {"times": times}
    if kind == "reset":
        kw["reset"] = True
    elif kind == "reset-after":
        kw["reset_after"] = True
    elif kind == "secondary":
        kw["secondary"] = True
        if arg:
            kw["retry_after"] = int(arg)
    elif kind == "ratelimit":
        kw["ratelimit_reset"] = float(arg or 1)
    else:
        kw["status"] = int(kind)
        if arg:
            kw["retry_after"] = int(arg)
    return op, kw


def serve_main(make: Callable[[argparse.Namespace], StandIn], parser: argparse.ArgumentParser,
               argv: list[str] | None = None) -> int:
    """Shared CLI: start, print the URL, serve until SIGTERM/SIGINT."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (the URL printed says which)")
    parser.add_argument("--state", metavar="FILE", help="append every request as a JSON line here")
    parser.add_argument("--fault", action="append", default=[], type=parse_fault, metavar="OP=SPEC",
                        help="queue a fault, e.g. issues/create-comment=502x3, *=429:1, OP=reset, OP=reset-after")
    args = parser.parse_args(argv)
    standin = make(args)
    for op, kw in args.fault:
        standin.fail(op, kw.pop("status", None), **kw)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    standin.start()
    print(standin.url, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        standin.stop()
        if standin.violations:
            print(f"{standin.name}: {len(standin.violations)} contract violation(s):", file=sys.stderr)
            for v in standin.violations:
                print(f"  {v}", file=sys.stderr)
    return 0
