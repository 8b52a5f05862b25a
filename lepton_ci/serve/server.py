"""HTTP server speaking the V2 inference protocol for one model.

Standard library HTTP (threaded, keep-alive) keeps the server dependency-free apart from the model's
own framework; Prometheus metrics are served when prometheus_client is installed.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lepton_ci import __version__
from lepton_ci.serve.v2 import BadRequest, decode_inputs, encode_outputs, requested_outputs, split_binary

MAX_BODY = 256 * 1024 * 1024
MODEL_ROUTE = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<rest>/ready|/infer)?$")


class Metrics:
    """Request counts and latency per model, if prometheus_client is available."""

    def __init__(self) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            self.registry = None
            return
        self.prom = prom
        self.registry = prom.CollectorRegistry()
        self.requests = prom.Counter("lepton_inference_requests", "Inference requests", ["model", "status"], registry=self.registry)
        self.latency = prom.Histogram("lepton_inference_seconds", "Inference latency", ["model"], registry=self.registry)

    def observe(self, model: str, status: int, seconds: float) -> None:
        if self.registry is not None:
            self.requests.labels(model, str(status)).inc()
            self.latency.labels(model).observe(seconds)

    def render(self) -> bytes | None:
        return None if self.registry is None else self.prom.generate_latest(self.registry)


class ModelServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], model: Any, name: str, version: str) -> None:
        super().__init__(address, Handler)
        self.model = model
        self.model_name = name
        self.model_version = str(version)
        self.metrics = Metrics()
        self.ready = True

    def model_metadata(self) -> dict[str, Any]:
        meta = self.model.metadata()
        return {"name": self.model_name, "versions": [self.model_version], "platform": meta["platform"],
                "inputs": meta["inputs"], "outputs": meta["outputs"]}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ModelServer

    def log_message(self, format: str, *args: Any) -> None:  # one line at start-up, not one per request
        pass

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": message})

    def _model_route(self) -> tuple[str, str | None, str] | None:
        m = MODEL_ROUTE.match(self.path.split("?", 1)[0])
        if not m:
            return None
        return m.group("name"), m.group("version"), m.group("rest") or ""

    def _check_model(self, name: str, version: str | None) -> bool:
        if name != self.server.model_name:
            self._error(404, f"unknown model {name!r} (this server serves {self.server.model_name!r})")
            return False
        if version is not None and version != self.server.model_version:
            self._error(404, f"unknown version {version!r} of model {name!r} (serving {self.server.model_version})")
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        path = self.path.split("?", 1)[0]
        if path == "/v2/health/live":
            return self._send(200, {"live": True})
        if path == "/v2/health/ready":
            return self._send(200 if self.server.ready else 503, {"ready": self.server.ready})
        if path == "/v2":
            return self._send(200, {"name": "lepton-ci", "version": __version__, "extensions": ["binary_tensor_data"]})
        if path == "/metrics":
            text = self.server.metrics.render()
            if text is None:
                return self._error(404, "metrics need prometheus_client (pip install prometheus_client)")
            return self._send(200, text, "text/plain; version=0.0.4")
        route = self._model_route()
        if route is None or route[2] == "/infer":
            return self._error(404 if route is None else 405, f"no GET route {path}")
        name, version, rest = route
        if not self._check_model(name, version):
            return None
        if rest == "/ready":
            return self._send(200, {"name": name, "ready": self.server.ready})
        return self._send(200, self.server.model_metadata())

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        route = self._model_route()
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return self._error(411, "Content-Length is required")
        if int(length) > MAX_BODY:
            return self._error(413, f"request body larger than {MAX_BODY} bytes")
        body = self.rfile.read(int(length))
        if route is None or route[2] != "/infer":
            return self._error(404, f"no POST route {self.path}")
        name, version, _ = route
        if not self._check_model(name, version):
            return None
        start = time.perf_counter()
        status = 200
        try:
            request, binary = split_binary(body, self.headers.get("Inference-Header-Content-Length"))
            inputs = decode_inputs(request, binary)
            outputs = encode_outputs(self.server.model.predict(inputs, requested_outputs(request)))
            response: dict[str, Any] = {"model_name": name, "model_version": self.server.model_version, "outputs": outputs}
            if isinstance(request.get("id"), str):
                response["id"] = request["id"]
            self._send(200, response)
        except (BadRequest, ValueError) as exc:
            status = 400
            self._error(400, str(exc))
        except Exception as exc:  # noqa: BLE001 - a model error must not take the server down
            status = 500
            self._error(500, f"inference failed: {type(exc).__name__}: {exc}")
        finally:
            self.server.metrics.observe(name, status, time.perf_counter() - start)


def make_server(model: Any, name: str, version: str, host: str = "127.0.0.1", port: int = 0) -> ModelServer:
    return ModelServer((host, port), model, name, version)


def serve_in_thread(server: ModelServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


def log(message: str) -> None:
    print(f"lepton-ci serve: {message}", file=sys.stderr, flush=True)
