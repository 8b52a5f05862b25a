"""HTTP server speaking the Open Inference Protocol (V2 REST, as KServe and Triton do) for one model.

Standard library HTTP (threaded, HTTP/1.1 keep-alive) keeps the server free of web-framework
dependencies; only the model's own framework is needed, and Prometheus metrics are served when
prometheus_client is installed. Library use (tests, the deploy step):

    server = make_server(model, "digits", "3", "127.0.0.1", 0)   # port 0: a free port
    port = server.server_address[1]
    server.serve_forever()          # or serve_in_thread(server); server.shutdown() from another thread
"""

from __future__ import annotations

import json
import os
import re
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from lepton_ci import __version__
from lepton_ci.serve.v2 import (
    decode_inputs,
    decompress,
    encode_outputs,
    requested_outputs,
    split_binary,
)

SERVER_NAME = "lepton-ci"
MAX_BODY = 256 * 1024 * 1024
MODEL_ROUTE = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<rest>/ready|/infer)?/?$")


def default_workers() -> int:
    """Concurrent model calls by default: the CPUs we may use, at most 4 (numpy/BLAS use threads too)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


class Metrics:
    """Request counts and latency per model, if prometheus_client is available (it is optional)."""

    def __init__(self) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            self.registry = None
            return
        self.prom = prom
        self.registry = prom.CollectorRegistry()  # our own registry: two servers in one process stay separate
        self.requests = prom.Counter(
            "lepton_inference_requests",
            "Inference requests by model, version and HTTP status",
            ["model", "version", "status"],
            registry=self.registry,
        )
        self.latency = prom.Histogram(
            "lepton_inference_seconds",
            "Inference request latency in seconds",
            ["model", "version"],
            registry=self.registry,
        )

    def observe(self, model: str, version: str, status: int, seconds: float) -> None:
        if self.registry is not None:
            self.requests.labels(model, version, str(status)).inc()
            self.latency.labels(model, version).observe(seconds)

    def render(self) -> tuple[bytes, str] | None:
        if self.registry is None:
            return None
        return self.prom.generate_latest(self.registry), self.prom.CONTENT_TYPE_LATEST


class ModelServer(ThreadingHTTPServer):
    """One model, one listening socket on exactly the given host."""

    daemon_threads = True  # idle keep-alive connections must not hold up shutdown
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], model: Any, name: str, version: str, workers: int | None = None
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.model = model
        self.model_name = name
        self.model_version = str(version)
        self.metrics = Metrics()
        self.ready = True
        self.workers = workers or default_workers()
        self._model_slots = threading.BoundedSemaphore(self.workers)
        self._inflight = 0
        self._inflight_lock = threading.Condition()
        self._metadata: dict[str, Any] | None = None

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse-DNS lookup (getfqdn can stall on hosts with broken DNS)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-response is normal; anything else gets one line, not a traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        log(f"error handling a request from {client_address[0]}: {type(exc).__name__}: {exc}")

    def model_metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            meta = self.model.metadata()
            self._metadata = {
                "name": self.model_name,
                "versions": [self.model_version],
                "platform": meta["platform"],
                "inputs": meta["inputs"],
                "outputs": meta["outputs"],
            }
        return self._metadata

    def run_model(self, inputs: dict[str, Any], outputs: list[str] | None) -> dict[str, Any]:
        """At most `workers` model calls at once; health and metadata requests never wait on this."""
        with self._inflight_lock:
            self._inflight += 1
        try:
            with self._model_slots:
                return self.model.predict(inputs, outputs)
        finally:
            with self._inflight_lock:
                self._inflight -= 1
                self._inflight_lock.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait for in-flight inferences to finish (after shutdown()); False if some were still running."""
        deadline = time.monotonic() + timeout
        with self._inflight_lock:
            while self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._inflight_lock.wait(left)
        return True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"{SERVER_NAME}/{__version__}"
    server: ModelServer

    def log_message(self, format: str, *args: Any) -> None:  # one line at start-up, not one per request
        pass

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": message})

    def _path(self) -> str:
        return self.path.split("?", 1)[0]

    def _model_route(self) -> tuple[str, str | None, str] | None:
        m = MODEL_ROUTE.match(self._path())
        if not m:
            return None
        version = m.group("version")
        return unquote(m.group("name")), unquote(version) if version is not None else None, m.group("rest") or ""

    def _check_model(self, name: str, version: str | None) -> bool:
        if name != self.server.model_name:
            self._error(404, f"unknown model {name!r} (this server serves {self.server.model_name!r})")
            return False
        if version not in (None, "", self.server.model_version):
            self._error(
                404, f"unknown version {version!r} of model {name!r} (serving version {self.server.model_version})"
            )
            return False
        return True

    def do_GET(self) -> None:  # http.server's naming
        path = self._path()
        if path == "/v2/health/live":
            return self._send(200, {"live": True})
        if path == "/v2/health/ready":
            return self._send(200 if self.server.ready else 503, {"ready": self.server.ready})
        if path in ("/v2", "/v2/"):
            return self._send(200, {"name": SERVER_NAME, "version": __version__, "extensions": []})
        if path == "/metrics":
            rendered = self.server.metrics.render()
            if rendered is None:
                return self._error(404, "metrics need prometheus_client (pip install prometheus_client)")
            return self._send(200, rendered[0], rendered[1])
        route = self._model_route()
        if route is None:
            return self._error(404, f"no route GET {path}")
        name, version, rest = route
        if rest == "/infer":
            return self._error(405, f"{path} takes POST")
        if not self._check_model(name, version):
            return None
        if rest == "/ready":
            return self._send(200 if self.server.ready else 503, {"name": name, "ready": self.server.ready})
        return self._send(200, self.server.model_metadata())

    do_HEAD = do_GET

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering an error (the connection then closes: its
        unread bytes would otherwise be parsed as the next request)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._error(411, "chunked requests are not supported; send Content-Length")
            return None
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            self.close_connection = True
            self._error(411, "Content-Length is required")
            return None
        if int(length) > MAX_BODY:
            self.close_connection = True
            self._error(413, f"request body is larger than {MAX_BODY} bytes")
            return None
        body = self.rfile.read(int(length))
        if len(body) != int(length):
            self.close_connection = True
            return None  # the client went away mid-body; nobody is left to answer
        return body

    def do_POST(self) -> None:
        body = self._read_body()
        if body is None:
            return None
        route = self._model_route()
        if route is None or route[2] != "/infer":
            return self._error(404 if route is None else 405, f"no route POST {self._path()}")
        name, version, _ = route
        if not self._check_model(name, version):
            return None
        start = time.perf_counter()
        status = 200
        try:
            body = decompress(body, self.headers.get("Content-Encoding"), MAX_BODY)
            request, binary = split_binary(body, self.headers.get("Inference-Header-Content-Length"))
            inputs = decode_inputs(request, binary)
            wanted = requested_outputs(request)
            outputs = encode_outputs(self.server.run_model(inputs, wanted))
            response: dict[str, Any] = {"model_name": name, "model_version": self.server.model_version}
            if isinstance(request.get("id"), str) and request["id"]:
                response["id"] = request["id"]
            response["outputs"] = outputs
            self._send(200, response)
        except ValueError as exc:  # BadRequest too: the request does not fit the protocol or the model
            status = 400
            self._error(400, str(exc))
        except Exception as exc:  # noqa: BLE001 - a model error must not take the server down
            status = 500
            self._error(500, f"inference failed: {type(exc).__name__}: {exc}")
        finally:
            self.server.metrics.observe(name, self.server.model_version, status, time.perf_counter() - start)

    def _not_allowed(self) -> None:
        self.close_connection = True  # a body we did not read may follow
        self._error(405, f"method {self.command} is not supported")

    do_PUT = do_DELETE = do_PATCH = _not_allowed


def make_server(
    model: Any, name: str, version: str | int, host: str = "127.0.0.1", port: int = 0, *, workers: int | None = None
) -> ModelServer:
    """Bind (port 0 picks a free port; read it from `server.server_address[1]`); call serve_forever() to serve."""
    return ModelServer((host, port), model, name, str(version), workers)


def serve_in_thread(server: ModelServer) -> threading.Thread:
    """Serve from a daemon thread (tests, in-process use); stop with server.shutdown()."""
    thread = threading.Thread(target=server.serve_forever, name=f"{SERVER_NAME}-serve", daemon=True)
    thread.start()
    return thread


def log(message: str) -> None:
    print(f"lepton-ci serve: {message}", file=sys.stderr, flush=True)
