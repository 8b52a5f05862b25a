"""A minimal Open Inference Protocol (V2) REST client for health checks and smoke requests.

Standard library only: the deploy step must not need numpy or tritonclient to check an endpoint.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any


def call(method: str, url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text) if text else None
    except json.JSONDecodeError:
        return status, text


def check(name: str, method: str, url: str, body: Any = None, expect: int = 200) -> dict[str, Any]:
    """One health-check result as deployment.json records it."""
    start = time.monotonic()
    try:
        status, payload = call(method, url, body)
        ok = status == expect
        detail = "" if ok else f"HTTP {status}: {payload if isinstance(payload, str) else json.dumps(payload)[:300]}"
    except (OSError, urllib.error.URLError) as exc:
        status, payload, ok, detail = None, None, False, f"{type(exc).__name__}: {exc}"
    return {
        "check": name,
        "url": url,
        "status": status,
        "passed": ok,
        "detail": detail,
        "ms": round((time.monotonic() - start) * 1000, 1),
        "response": payload if ok else None,
    }


def endpoint_health(base: str, model: str) -> tuple[str, list[dict[str, Any]]]:
    """`deploy status` of a running endpoint: "healthy" or "unhealthy", and the live and model-ready checks."""
    health = [
        check("live", "GET", f"{base}/v2/health/live"),
        check("ready", "GET", f"{base}/v2/models/{model}/ready"),
    ]
    for h in health:
        h.pop("response", None)
    return ("healthy" if all(h["passed"] for h in health) else "unhealthy"), health


def zeros_request(metadata: dict[str, Any]) -> dict[str, Any]:
    """A one-row request of zeros built from model metadata: the default smoke test."""
    inputs = []
    for spec in metadata.get("inputs", []):
        shape = [1 if d in (-1, None) else int(d) for d in spec.get("shape", [-1])]
        count = 1
        for d in shape:
            count *= d
        value: Any = False if spec.get("datatype") == "BOOL" else ("" if spec.get("datatype") == "BYTES" else 0)
        inputs.append(
            {"name": spec["name"], "shape": shape, "datatype": spec.get("datatype", "FP32"), "data": [value] * count}
        )
    return {"id": "lepton-ci-smoke", "inputs": inputs}
