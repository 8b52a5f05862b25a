"""A stand-in for one DGX Cloud Lepton workspace API (the legacy /deployments routes), on loopback only.

Lepton's platform cannot be reached from here, so the lepton target is tested against this. Every request
body is validated with the `leptonai` package's own pydantic types (`LeptonDeployment`), and refused with
400 when they refuse it; it is also refused when it carries a field those types do not know (pydantic
would drop it silently, the platform would not act on it: either way the deploy would not do what it
says). Every answer is built through the same types, so the client parses what the platform would send.

Deployments go Starting/Updating → Ready after `ready_after` reads; an image listed in `broken_images`
goes to Error instead. Requests are recorded (method, path, body) for the tests; the token is not.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/api/v2/workspaces/ws-test"


def unknown_keys(sent: Any, kept: Any, path: str = "") -> list[str]:
    """Key paths present in `sent` but not in `kept` (the validated model dumped back)."""
    if isinstance(sent, dict):
        if not isinstance(kept, dict):
            return []
        out = []
        for key, value in sent.items():
            where = f"{path}.{key}" if path else str(key)
            out += [where] if key not in kept else unknown_keys(value, kept[key], where)
        return out
    if isinstance(sent, list) and isinstance(kept, list):
        return [p for s, k in zip(sent, kept, strict=False) for p in unknown_keys(s, k, path + "[]")]
    return []


def validate_deployment(body: Any) -> tuple[Any, str | None]:
    """(the LeptonDeployment, None) or (None, why the platform's types refuse the body)."""
    from leptonai.api.v2.types.deployment import LeptonDeployment
    from pydantic import ValidationError

    if not isinstance(body, dict):
        return None, "the body is not a JSON object"
    try:
        model = LeptonDeployment.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        return None, f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    extra = unknown_keys(body, model.model_dump(by_alias=True, exclude_unset=True, mode="json"))
    if extra:
        return None, f"unknown field(s): {', '.join(extra)}"
    return model, None


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@dataclass
class Workspace:
    token: str
    ready_after: int = 2
    broken_images: set[str] = field(default_factory=set)
    # name -> {"spec", "metadata", "state", "reads"}
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, name: str) -> dict[str, Any]:
        """The deployment as the platform returns it, built through the package's types."""
        from leptonai.api.v2.types.deployment import LeptonDeployment

        d = self.deployments[name]
        raw = {
            "metadata": {**d["metadata"], "id": name, "name": name},
            "spec": d["spec"],
            "status": {
                "state": d["state"],
                "endpoint": {"internal_endpoint": f"http://{name}.internal:8080",
                             "external_endpoint": f"https://{name}-ws-test.lepton.example"},
            },
        }
        return LeptonDeployment.model_validate(raw).model_dump(by_alias=True, exclude_none=True, mode="json")

    def workspace_info(self) -> dict[str, Any]:
        from leptonai.api.v2.types.workspace import WorkspaceInfo

        zero = {"cpu": 0.0, "memory": 0, "accelerator_num": 0.0}
        info = {
            "build_time": "2026-01-01T00:00:00Z", "git_commit": "0" * 40, "workspace_name": "ws-test",
            "workspace_tier": "enterprise", "workspace_state": "normal", "supported_shapes": {},
            "workspace_disk_usage_bytes": 0, "resource_quota": {"limit": zero, "used": zero},
            "workloads": {"num_deployments": len(self.deployments), "num_jobs": 0, "num_pods": 0,
                          "num_secrets": 0, "num_image_pull_secrets": 0},
            "features": {"enable_new_deployment_api": False},
        }
        return WorkspaceInfo.model_validate(info).model_dump(mode="json", exclude_none=True)

    def advance(self, name: str) -> None:
        d = self.deployments[name]
        if d["state"] in ("Starting", "Updating"):
            d["reads"] += 1
            image = (d["spec"].get("container") or {}).get("image")
            if image in self.broken_images:
                d["state"] = "Error"
            elif d["reads"] >= self.ready_after:
                d["state"] = "Ready"


class Handler(BaseHTTPRequestHandler):
    ws: Workspace

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, code: int, message: str) -> None:
        self._send(code, {"code": {400: "InvalidRequest", 401: "Unauthorized", 404: "NotFound",
                                   409: "AlreadyExists"}.get(code, "Error"), "message": message})

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            self.ws.requests.append((self.command, self.path, raw))
            return self._error(400, "the body is not JSON")
        with self.ws.lock:
            self.ws.requests.append((self.command, self.path, body))
            if self.headers.get("Authorization") != f"Bearer {self.ws.token}":
                return self._error(401, "invalid or missing token")
            if not self.path.startswith(PREFIX + "/"):
                return self._error(404, f"no route {self.path}")
            parts = self.path[len(PREFIX) + 1:].split("?")[0].split("/")
            self._route(parts, body)

    def _route(self, parts: list[str], body: Any) -> None:
        ws, method = self.ws, self.command
        if parts == ["workspace"] and method == "GET":
            return self._send(200, ws.workspace_info())
        if parts == ["deployments"] and method == "GET":
            return self._send(200, [ws.answer(n) for n in ws.deployments])
        if parts == ["deployments"] and method == "POST":
            model, problem = validate_deployment(body)
            if problem:
                return self._error(400, f"invalid deployment: {problem}")
            name = model.metadata.name if model.metadata else None
            if not name or model.spec is None or model.spec.container is None or not model.spec.container.image:
                return self._error(400, "invalid deployment: metadata.name and spec.container.image are required")
            if name in ws.deployments:
                return self._error(409, f"deployment {name} already exists")
            ws.deployments[name] = {"metadata": body.get("metadata") or {}, "spec": body["spec"], "state": "Starting",
                                    "reads": 0}
            return self._send(200, ws.answer(name))
        if len(parts) == 2 and parts[0] == "deployments":
            name = parts[1]
            if name not in ws.deployments:
                return self._error(404, f"deployment {name} not found")
            if method == "GET":
                ws.advance(name)
                return self._send(200, ws.answer(name))
            if method == "PATCH":
                _, problem = validate_deployment(body)
                if problem:
                    return self._error(400, f"invalid deployment: {problem}")
                d = ws.deployments[name]
                d["spec"] = _merge(d["spec"], body.get("spec") or {})
                stopping = (d["spec"].get("resource_requirement") or {}).get("min_replicas") == 0
                d["state"], d["reads"] = ("Stopped" if stopping else "Updating"), 0
                return self._send(200, ws.answer(name))
            if method == "DELETE":
                del ws.deployments[name]
                return self._send(200, {})
        return self._error(404, f"no route {method} {'/'.join(parts)}")

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle


@contextmanager
def lepton_standin(token: str, **kwargs: Any) -> Iterator[tuple[str, Workspace]]:
    """(the workspace API URL, the Workspace state) of a stand-in listening on 127.0.0.1."""
    ws = Workspace(token=token, **kwargs)
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("LeptonHandler", (Handler,), {"ws": ws}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{PREFIX}", ws
    finally:
        server.shutdown()
        server.server_close()
