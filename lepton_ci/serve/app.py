"""The model server's ASGI application: the Open Inference Protocol (V2 REST) for one model.

A bare ASGI callable rather than a framework: routing is a dozen fixed paths, and every microsecond of
per-request overhead is a request per second lost (docs/serving.md has the measurements). Limits are
enforced here before bytes are decoded: the declared body size, the bytes actually read, the
decompressed size and every tensor's declared element count.
"""

from __future__ import annotations

import concurrent.futures
import hmac
import re
import sys
import time
from typing import Any

import orjson

from lepton_ci import __version__
from lepton_ci.serve.batcher import ModelRunner, Overloaded
from lepton_ci.serve.metrics import ServerMetrics
from lepton_ci.serve.options import ServeOptions
from lepton_ci.serve.v2 import (
    BadRequest,
    binary_outputs,
    decode_inputs,
    decompress,
    encode_outputs,
    requested_outputs,
    split_binary,
)

SERVER_NAME = "lepton-ci"
EXTENSIONS = ["binary_tensor_data"]
MODEL_ROUTE = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<rest>/ready|/infer)?/?$")
HEALTH = frozenset({"/v2/health/live", "/v2/health/ready"})
OFFLOAD_BYTES = 256 * 1024  # bodies this large are decoded in a thread, so the loop keeps serving others
DECODE_THREADS = 2
JSON = b"application/json"
DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class ClientGone(Exception):
    """The client disconnected before its request was complete: nobody is left to answer."""


class State:
    """What the supervisor and signal handlers change while the app runs."""

    def __init__(self) -> None:
        self.ready = True  # readiness turns False first on SIGTERM (drain)


class V2App:
    """One model, one version; an ASGI 3 application (lifespan starts and stops the batcher)."""

    def __init__(
        self,
        model: Any,
        name: str,
        version: str,
        options: ServeOptions,
        *,
        framework: str = "",
        state: State | None = None,
    ) -> None:
        self.model = model
        self.name = name
        self.version = str(version)
        self.options = options
        self.state = state or State()
        self.metrics = ServerMetrics(name, self.version, framework)
        self.runner: ModelRunner | None = None
        self._body_bytes = 0  # reserved by requests being read or decoded (see _infer)
        # Large and compressed bodies are decoded here, off the loop. Two threads bound the memory a
        # decompression or a large JSON parse can take at once to twice max_body_bytes (plus its objects).
        self._decoders = concurrent.futures.ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="lepton-decode")
        meta = model.metadata()
        self._metadata = orjson.dumps(
            {
                "name": name,
                "versions": [self.version],
                "platform": meta["platform"],
                "inputs": meta["inputs"],
                "outputs": meta["outputs"],
            }
        )
        self._server_meta = orjson.dumps({"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})
        token = options.auth_token
        self._token = f"Bearer {token}".encode() if token else None
        self._server_header = (b"server", f"{SERVER_NAME}/{__version__}".encode())

    # -- ASGI ------------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.runner = ModelRunner(self.model, self.options, self.metrics)
                self.runner.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.runner is not None:
                    await self.runner.stop()
                self._decoders.shutdown(wait=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        start = time.perf_counter()
        method: str = scope["method"]
        path: str = scope["path"]
        log: dict[str, Any] | None = {} if self.options.access_log else None
        try:
            status, body, headers = await self._route(method, path, scope, receive, log)
        except ClientGone:
            return
        headers.append((b"content-length", str(len(body)).encode()))
        headers.append(self._server_header)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
        elapsed = time.perf_counter() - start
        if log is not None:
            self._access_log(scope, method, path, status, len(body), elapsed, log)
        if path.endswith("/infer"):
            self.metrics.observe(status, elapsed)

    async def _route(
        self, method: str, path: str, scope: dict[str, Any], receive: Any, log: dict[str, Any] | None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if path in HEALTH:
            if method not in ("GET", "HEAD"):
                return _not_allowed(method, "GET, HEAD")
            if path == "/v2/health/live":
                return 200, b'{"live":true}', [(b"content-type", JSON)]
            ready = self.state.ready
            return (
                (200 if ready else 503),
                b'{"ready":true}' if ready else b'{"ready":false}',
                [(b"content-type", JSON)],
            )
        if self._token is not None and not self._authorized(scope):
            return (
                401,
                b'{"error":"missing or wrong bearer token (Authorization: Bearer TOKEN)"}',
                [(b"content-type", JSON), (b"www-authenticate", b'Bearer realm="lepton-ci"')],
            )
        if path in ("/v2", "/v2/"):
            if method not in ("GET", "HEAD"):
                return _not_allowed(method, "GET, HEAD")
            return 200, self._server_meta, [(b"content-type", JSON)]
        if path == "/metrics":
            if method not in ("GET", "HEAD"):
                return _not_allowed(method, "GET, HEAD")
            rendered = self.metrics.render()
            if rendered is None:
                return _error(404, "metrics need prometheus_client (pip install prometheus_client)")
            return 200, rendered[0], [(b"content-type", rendered[1].encode())]
        m = MODEL_ROUTE.match(path)
        if m is None:
            return _error(404, f"no route {method} {path[:200]}")
        name, version, rest = m["name"], m["version"], m["rest"] or ""  # scope["path"] is already decoded
        if rest == "/infer":
            if method != "POST":
                return _not_allowed(method, "POST")
        elif method not in ("GET", "HEAD"):
            return _not_allowed(method, "GET, HEAD")
        if name != self.name:
            return _error(404, f"unknown model {name[:100]!r} (this server serves {self.name!r})")
        if version is not None and version != self.version:
            return _error(404, f"unknown version {version[:100]!r} of model {name!r} (serving version {self.version})")
        if rest == "/ready":
            ready = self.state.ready
            return (200 if ready else 503), orjson.dumps({"name": name, "ready": ready}), [(b"content-type", JSON)]
        if rest == "":
            return 200, self._metadata, [(b"content-type", JSON)]
        return await self._infer(scope, receive, log)

    def _authorized(self, scope: dict[str, Any]) -> bool:
        for key, value in scope["headers"]:
            if key == b"authorization":
                return hmac.compare_digest(value, self._token or b"")
        return False

    # -- inference -------------------------------------------------------------------------------
    async def _infer(
        self, scope: dict[str, Any], receive: Any, log: dict[str, Any] | None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """Reserve the body's bytes from the worker's budget first: without it, every open connection
        could be uploading a body of the maximum size at once, and memory would have no bound."""
        declared = _headers(scope).get(b"content-length")
        reserve = self.options.max_body_bytes  # chunked: the most it may grow to
        if declared is not None and declared.isdigit() and len(declared) <= 19:
            reserve = min(int(declared), reserve)
        if self._body_bytes and self._body_bytes + reserve > self.options.max_inflight_bytes:
            return _error(
                503,
                f"{self._body_bytes} bytes of requests are being read or decoded "
                f"(max_inflight_bytes {self.options.max_inflight_bytes}); retry later",
                retry_after=self.options.retry_after_s,
            )
        self._body_bytes += reserve
        try:
            return await self._infer_reserved(scope, receive, log)
        finally:
            self._body_bytes -= reserve

    async def _infer_reserved(
        self, scope: dict[str, Any], receive: Any, log: dict[str, Any] | None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        runner = self.runner
        if runner is None:
            return _error(503, "the model is not loaded yet", retry_after=self.options.retry_after_s)
        if runner.full:  # refuse before reading or decoding anything: overload must stay cheap to answer
            return _error(503, runner.full_message(), retry_after=self.options.retry_after_s)
        headers = _headers(scope)
        limit = self.options.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or len(declared) > 19:
                return _error(400, "Content-Length is not a number", close=True)
            if int(declared) > limit:
                return _error(413, f"request body of {int(declared)} bytes is over the limit of {limit}", close=True)
        body = await _read_body(receive, limit)
        if body is None:
            return _error(413, f"request body is over the limit of {limit} bytes", close=True)
        if log is not None:
            log["bytes_in"] = len(body)
        encoding = headers.get(b"content-encoding")
        header_length = headers.get(b"inference-header-content-length")
        try:
            if len(body) > OFFLOAD_BYTES or encoding is not None:
                import asyncio

                request, inputs = await asyncio.get_running_loop().run_in_executor(
                    self._decoders, self._decode, body, encoding, header_length
                )
            else:
                request, inputs = self._decode(body, encoding, header_length)
            wanted = requested_outputs(request)
            binary = binary_outputs(request)
            rid = request.get("id")
            if rid is not None and not isinstance(rid, str):
                raise BadRequest("request 'id' must be a string")
        except BadRequest as exc:
            return _error(400, str(exc))
        if log is not None and rid is not None:
            log["id"] = rid[:100]
        self.metrics.in_flight_add(1)
        try:
            result = await runner.infer(inputs, wanted)
            tensors, raw = encode_outputs(result, binary)
        except Overloaded as exc:
            return _error(503, str(exc), retry_after=self.options.retry_after_s)
        except ValueError as exc:  # BadRequest too: the request does not fit the model
            return _error(400, str(exc))
        except Exception as exc:  # noqa: BLE001 - a model error must not take the server down
            return _error(500, f"inference failed: {type(exc).__name__}: {exc}")
        finally:
            self.metrics.in_flight_add(-1)
        response: dict[str, Any] = {"model_name": self.name, "model_version": self.version}
        if rid is not None:
            response["id"] = rid
        response["outputs"] = tensors
        try:
            payload = orjson.dumps(response, option=DUMPS_OPTIONS)
        except TypeError as exc:  # e.g. an output of a dtype orjson cannot write
            return _error(500, f"cannot encode the outputs: {exc}")
        if not raw:
            return 200, payload, [(b"content-type", JSON)]
        return (
            200,
            payload + raw,
            [
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", str(len(payload)).encode()),
            ],
        )

    def _decode(
        self, body: bytes, encoding: bytes | None, header_length: bytes | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if encoding is not None:
            body = decompress(body, encoding.decode("latin-1"), self.options.max_body_bytes)
        request, binary = split_binary(body, header_length.decode("latin-1") if header_length is not None else None)
        return request, decode_inputs(request, binary, self.options.max_tensor_elements)

    def _access_log(
        self, scope: dict[str, Any], method: str, path: str, status: int, size: int, seconds: float, extra: dict
    ) -> None:
        client = scope.get("client")
        line = {
            "ts": round(time.time(), 3),
            "remote": client[0] if client else None,
            "method": method,
            "path": path[:200],
            "status": status,
            "bytes_out": size,
            "ms": round(seconds * 1000, 3),
            "model": self.name,
            "version": self.version,
            **extra,
        }
        sys.stderr.write(orjson.dumps(line).decode() + "\n")


async def _read_body(receive: Any, limit: int) -> bytes | None:
    """The whole body, or None once it passes `limit` (the rest is never buffered)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _headers(scope: dict[str, Any]) -> dict[bytes, bytes]:
    return dict(scope["headers"])


def _error(
    status: int, message: str, *, close: bool = False, retry_after: int | None = None
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    headers = [(b"content-type", JSON)]
    if close:  # a body we did not read may follow: it must not be parsed as the next request
        headers.append((b"connection", b"close"))
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    return status, orjson.dumps({"error": message}), headers


def _not_allowed(method: str, allow: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    status, body, headers = _error(405, f"method {method[:20]} is not allowed here (allowed: {allow})")
    headers.append((b"allow", allow.encode()))
    return status, body, headers
