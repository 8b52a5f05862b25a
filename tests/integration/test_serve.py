"""The model server as a real process: V2 endpoints, a real V2 client (tritonclient), bad requests, signals.

Nothing is mocked: a LogisticRegression trained on sklearn's bundled digits is saved with joblib and
served by `python -m lepton_ci.serve` on a free port of 127.0.0.1. Under CI=true a missing
component (sklearn, tritonclient) fails the test instead of skipping it.
"""

from __future__ import annotations

import gzip
import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lepton_ci.errors import UserError
from lepton_ci.frameworks import get_loader
from lepton_ci.v2client import call
from tests.e2e.helpers import require

pytestmark = pytest.mark.slow
NAME, VERSION = "digits", "3"


def start_server(model_dir: Path, port_file: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    """Start the server and wait for its port file: written only once the model is loaded and it listens."""
    proc = subprocess.Popen([sys.executable, "-m", "lepton_ci.serve", "--model-dir", str(model_dir), "--model-file",
                             "model.joblib", "--framework", "sklearn", "--name", NAME, "--version", VERSION,
                             "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file), *extra],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not port_file.is_file():
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        assert time.monotonic() < deadline, "server did not write its port file within 60 s"
        time.sleep(0.05)
    return proc, int(port_file.read_text())


def stop_server(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    require("sklearn")
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from lepton_ci.frameworks.sklearn import save

    X, y = load_digits(return_X_y=True)
    model = LogisticRegression(max_iter=300).fit(X[:1000], y[:1000])
    d = tmp_path_factory.mktemp("model")
    save(model, d / "model.joblib")
    return d, model, X[1000:1040]


@pytest.fixture(scope="module")
def server(digits_model: tuple[Path, Any, Any], tmp_path_factory: pytest.TempPathFactory):
    proc, port = start_server(digits_model[0], tmp_path_factory.mktemp("srv") / "port", "--workers", "2")
    yield proc, f"http://127.0.0.1:{port}"
    stop_server(proc)


def post(base: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One raw POST on its own connection; returns (status, parsed JSON)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def row(n: int = 64, value: Any = 0.0) -> list[Any]:
    return [value] * n


def test_real_v2_client(server, digits_model) -> None:
    httpclient = require("tritonclient.http")
    import numpy as np

    _, model, X = digits_model
    client = httpclient.InferenceServerClient(url=server[1].removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(NAME) and client.is_model_ready(NAME, model_version=VERSION)
        assert not client.is_model_ready("other")
        server_meta = client.get_server_metadata()
        assert server_meta["name"] == "lepton-ci" and server_meta["extensions"] == ["binary_tensor_data"] and server_meta["version"]
        meta = client.get_model_metadata(NAME)
        assert meta["name"] == NAME and meta["versions"] == [VERSION] and meta["platform"] == "sklearn"
        assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 64]}]
        assert meta["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [-1]},
                                   {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 10]}]
        assert client.get_model_metadata(NAME, model_version=VERSION) == meta

        # JSON inputs and binary-extension inputs; outputs as JSON or in the binary extension, as asked.
        for binary_in in (False, True):
            for binary_out in (False, True):
                inp = httpclient.InferInput("input-0", list(X.shape), "FP64")
                inp.set_data_from_numpy(X, binary_data=binary_in)
                outs = [httpclient.InferRequestedOutput("predict", binary_data=binary_out),
                        httpclient.InferRequestedOutput("predict_proba", binary_data=binary_out)]
                result = client.infer(NAME, [inp], outputs=outs, request_id="r1")
                assert result.get_response()["id"] == "r1"
                for out in result.get_response()["outputs"]:
                    assert ("data" not in out) == binary_out, out
                    assert ("binary_data_size" in out.get("parameters", {})) == binary_out, out
                assert result.get_response()["model_version"] == VERSION
                np.testing.assert_array_equal(result.as_numpy("predict"), model.predict(X))
                np.testing.assert_allclose(result.as_numpy("predict_proba"), model.predict_proba(X), rtol=1e-12)

        # No outputs named: the client sets the request parameter binary_data_output=true; default output only.
        inp = httpclient.InferInput("input-0", list(X.shape), "FP64")
        inp.set_data_from_numpy(X, binary_data=False)
        result = client.infer(NAME, [inp], model_version=VERSION)
        assert [o["name"] for o in result.get_response()["outputs"]] == ["predict"]
        np.testing.assert_array_equal(result.as_numpy("predict"), model.predict(X))

        # Compressed request bodies (Content-Encoding) as the client sends them.
        for algorithm in ("gzip", "deflate"):
            result = client.infer(NAME, [inp], request_compression_algorithm=algorithm)
            np.testing.assert_array_equal(result.as_numpy("predict"), model.predict(X))

        # Other numeric datatypes are cast to the model's FP64.
        inp32 = httpclient.InferInput("input-0", list(X.shape), "FP32")
        inp32.set_data_from_numpy(X.astype(np.float32), binary_data=True)
        np.testing.assert_array_equal(client.infer(NAME, [inp32]).as_numpy("predict"), model.predict(X))

        # A bad request surfaces as the client's exception carrying our message.
        bad = httpclient.InferInput("input-0", [1, 3], "FP64")
        bad.set_data_from_numpy(np.zeros((1, 3)), binary_data=False)
        with pytest.raises(Exception, match="model expects 64"):
            client.infer(NAME, [bad])
    finally:
        client.close()


def test_health_metadata_and_nested_data(server, digits_model) -> None:
    _, model, X = digits_model
    base = server[1]
    assert call("GET", base + "/v2/health/live") == (200, {"live": True})
    assert call("GET", base + "/v2/health/ready") == (200, {"ready": True})
    assert call("GET", base + f"/v2/models/{NAME}/ready") == (200, {"name": NAME, "ready": True})
    assert call("GET", base + f"/v2/models/{NAME}/versions/{VERSION}/ready")[0] == 200
    status, meta = call("GET", base + f"/v2/models/{NAME}/versions/{VERSION}")
    assert status == 200 and meta["name"] == NAME and meta["versions"] == [VERSION]
    # Nested data (one list per row) and the versioned infer route.
    body = {"id": "nested", "inputs": [{"name": "input-0", "shape": [3, 64], "datatype": "FP64", "data": X[:3].tolist()}],
            "outputs": [{"name": "predict"}], "parameters": {"anything": 1}}
    status, out = call("POST", base + f"/v2/models/{NAME}/versions/{VERSION}/infer", body)
    assert status == 200, out
    assert out["model_name"] == NAME and out["model_version"] == VERSION and out["id"] == "nested"
    assert out["outputs"] == [{"name": "predict", "shape": [3], "datatype": "INT64", "data": model.predict(X[:3]).tolist()}]
    # The loader's example request is what the deploy smoke test sends: it must be valid.
    loaded = get_loader("sklearn").load(digits_model[0] / "model.joblib")
    status, out = call("POST", base + f"/v2/models/{NAME}/infer", loaded.example_request())
    assert status == 200 and out["outputs"][0]["data"] == model.predict([[0.0] * 64]).tolist()


INFER = f"/v2/models/{NAME}/infer"
GOOD_INPUT = {"name": "input-0", "shape": [1, 64], "datatype": "FP64", "data": row()}


def _body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    ("body", "headers", "needle"),
    [
        (b"{not json", {}, "not valid JSON"),
        (b"", {}, "not valid JSON"),
        (b"[]", {}, "must be a JSON object"),
        (_body(inputs=[]), {}, "non-empty 'inputs'"),
        (_body(inputs="x"), {}, "non-empty 'inputs'"),
        (_body(inputs=[5]), {}, "inputs[0] must be an object"),
        (_body(inputs=[{**GOOD_INPUT, "name": ""}]), {}, "needs a 'name'"),
        (_body(inputs=[{**GOOD_INPUT, "datatype": "FP99"}]), {}, "datatype 'FP99'"),
        (_body(inputs=[{**GOOD_INPUT, "data": [1, 2]}]), {}, "needs 64 elements, got 2"),
        (_body(inputs=[{**GOOD_INPUT, "data": [row(), row()]}]), {}, "nested data does not match shape [1, 64]"),
        (_body(inputs=[{**GOOD_INPUT, "shape": [2, 2], "data": [[1.0, 2.0, 3.0], [4.0]]}]), {}, "nested data does not match"),
        (_body(inputs=[{**GOOD_INPUT, "datatype": "FP32", "data": row(64, 1e300)}]), {}, "out of its range"),
        (_body(inputs=[{**GOOD_INPUT, "shape": [1, -2], "data": []}]), {}, "non-negative"),
        (_body(inputs=[{**GOOD_INPUT, "shape": "1x64"}]), {}, "non-negative"),
        (_body(inputs=[{k: v for k, v in GOOD_INPUT.items() if k != "data"}]), {}, "has no 'data'"),
        (_body(inputs=[{**GOOD_INPUT, "shape": [1, 3], "data": [1, 2, 3]}]), {}, "model expects 64"),
        (_body(inputs=[{**GOOD_INPUT, "shape": [2, 2, 16], "data": row(64)}]), {}, "must be 2-D"),
        (_body(inputs=[{**GOOD_INPUT, "data": row(64, "x")}]), {}, "does not fit datatype FP64"),
        (_body(inputs=[{**GOOD_INPUT, "data": row(64, None)}]), {}, "does not fit datatype FP64"),
        (_body(inputs=[{**GOOD_INPUT, "datatype": "INT8", "data": row(64, "x")}]), {}, "does not fit datatype INT8"),
        (_body(inputs=[{**GOOD_INPUT, "datatype": "INT8", "data": row(64, 300)}]), {}, "does not fit datatype INT8"),
        (_body(inputs=[{**GOOD_INPUT, "datatype": "INT64", "data": row(64, 1.5)}]), {}, "expected integers"),
        (_body(inputs=[{**GOOD_INPUT, "datatype": "BOOL", "data": row(64, 1)}]), {}, "expected true/false"),
        (_body(inputs=[{**GOOD_INPUT, "datatype": "BYTES", "data": row(64, "a")}]), {}, "must be numeric"),
        (_body(inputs=[{**GOOD_INPUT, "name": "features"}]), {}, "missing input 'input-0'"),
        (_body(inputs=[GOOD_INPUT, {**GOOD_INPUT, "name": "extra"}]), {}, "unknown input 'extra'"),
        (_body(inputs=[GOOD_INPUT, GOOD_INPUT]), {}, "given twice"),
        (_body(inputs=[GOOD_INPUT], outputs=[{"name": "nope"}]), {}, "unknown output 'nope'"),
        (_body(inputs=[GOOD_INPUT], outputs="predict"), {}, "'outputs' must be a list"),
        (_body(inputs=[{**GOOD_INPUT, "parameters": []}]), {}, "'parameters' must be an object"),
        (_body(inputs=[GOOD_INPUT]), {"Inference-Header-Content-Length": "999999"}, "does not fit a body"),
        (_body(inputs=[GOOD_INPUT]), {"Inference-Header-Content-Length": "abc"}, "not a number"),
        (_body(inputs=[{"name": "input-0", "shape": [1, 64], "datatype": "FP64", "parameters": {"binary_data_size": 512}}])
         + b"\0" * 100, {"Inference-Header-Content-Length": "SELF"}, "shorter than binary_data_size"),
        (_body(inputs=[{"name": "input-0", "shape": [1, 64], "datatype": "FP64", "parameters": {"binary_data_size": 8}}])
         + b"\0" * 8, {"Inference-Header-Content-Length": "SELF"}, "needs 64 elements"),
        (_body(inputs=[{"name": "input-0", "shape": [1, 1], "datatype": "BYTES", "parameters": {"binary_data_size": 2}}])
         + b"\0" * 2, {"Inference-Header-Content-Length": "SELF"}, "ends inside an element's length"),
        (_body(inputs=[{"name": "input-0", "shape": [1, 1], "datatype": "BYTES", "parameters": {"binary_data_size": 5}}])
         + b"\1\0\0\0a", {"Inference-Header-Content-Length": "SELF"}, "must be numeric"),
        (_body(inputs=[{"name": "input-0", "shape": [1, 64], "datatype": "FP64", "parameters": {"binary_data_size": 512}}])
         + b"\0" * 520, {"Inference-Header-Content-Length": "SELF"}, "8 bytes of binary data follow"),
        (_body(inputs=[{**GOOD_INPUT, "shape": [1000000000, 64]}]), {}, "this server takes at most"),
        (_body(inputs=[{**GOOD_INPUT, "shape": [2**40, 2**40, 0]}]), {}, "is too large"),
        (b"not gzip", {"Content-Encoding": "gzip"}, "not valid gzip"),
        (gzip.compress(b"{}"), {"Content-Encoding": "br"}, "unsupported Content-Encoding"),
        (gzip.compress(b"{oops"), {"Content-Encoding": "gzip"}, "not valid JSON"),
    ],
)
def test_bad_requests_get_400_and_the_server_stays_up(server, body: bytes, headers: dict[str, str], needle: str) -> None:
    if headers.get("Inference-Header-Content-Length") == "SELF":  # the JSON part's length, binary data after it
        headers = {**headers, "Inference-Header-Content-Length": str(body.index(b"}]}") + 3)}
    status, payload = post(server[1], INFER, body, headers)
    assert status == 400, payload
    assert needle in payload["error"], payload
    assert call("GET", server[1] + "/v2/health/ready") == (200, {"ready": True})
    assert server[0].poll() is None


def test_routes_errors_keep_alive_and_metrics(server) -> None:
    base = server[1]
    assert call("GET", base + "/v2/models/other")[0] == 404
    assert call("GET", base + "/v2/models/other/ready")[0] == 404
    assert call("GET", base + f"/v2/models/{NAME}/versions/9")[0] == 404
    assert call("GET", base + "/v2/nothing")[0] == 404
    assert call("GET", base + INFER)[0] == 405
    status, payload = post(base, "/v2/models/other/infer", _body(inputs=[GOOD_INPUT]))
    assert status == 404 and "unknown model 'other'" in payload["error"]
    status, payload = post(base, f"/v2/models/{NAME}/versions/9/infer", _body(inputs=[GOOD_INPUT]))
    assert status == 404 and "unknown version '9'" in payload["error"]
    status, payload = post(base, "/v2/health/live", b"{}")
    assert status == 405 and "allowed: GET, HEAD" in payload["error"]
    for method, path, allow in (("TRACE", "/v2/", "GET, HEAD"), ("PUT", INFER, "POST"), ("DELETE", "/metrics", "GET, HEAD")):
        conn = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=10)
        conn.request(method, path)
        resp = conn.getresponse()
        assert (resp.status, resp.headers["Allow"]) == (405, allow), (method, path)
        conn.close()

    # HTTP/1.1 keep-alive: an error and then a good request on one connection, with exact Content-Length.
    conn = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=10)
    try:
        conn.request("POST", INFER, body=b"{bad", headers={"Content-Type": "application/json"})
        first = conn.getresponse()
        raw = first.read()
        assert first.status == 400 and int(first.headers["Content-Length"]) == len(raw)
        sock = conn.sock
        conn.request("POST", INFER, body=_body(inputs=[GOOD_INPUT]), headers={"Content-Type": "application/json"})
        second = conn.getresponse()
        assert second.status == 200 and json.loads(second.read())["outputs"][0]["name"] == "predict"
        assert conn.sock is sock and sock is not None, "the connection was not kept alive"
    finally:
        conn.close()

    status, text = call("GET", base + "/metrics")
    if status == 200:
        assert f'lepton_inference_requests_total{{model="{NAME}",status="400",version="{VERSION}"}}' in text
        assert f'lepton_inference_requests_total{{model="{NAME}",status="200",version="{VERSION}"}}' in text
        assert f'lepton_inference_seconds_count{{model="{NAME}",version="{VERSION}"}}' in text
    else:
        require("prometheus_client")  # absent: 404 is the documented behaviour, off CI
        assert status == 404


def test_binds_only_the_given_host(server) -> None:
    """127.0.0.2 is loopback too on Linux: a server bound to 0.0.0.0 would answer there."""
    port = int(server[1].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.2", port), timeout=5).close()


def test_sigterm_exits_0_with_an_open_keep_alive_connection(digits_model, tmp_path: Path) -> None:
    proc, port = start_server(digits_model[0], tmp_path / "port")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/v2/health/ready")
        assert json.loads(conn.getresponse().read()) == {"ready": True}
        proc.send_signal(signal.SIGTERM)  # the idle connection stays open: it must not block shutdown
        assert proc.wait(10) == 0
        stderr = proc.stderr.read() if proc.stderr else ""
        assert "serving digits version 3" in stderr and "stopped" in stderr and "Traceback" not in stderr
        conn.close()
    finally:
        stop_server(proc)


def test_start_failures_exit_2_with_one_line(digits_model, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown model framework 'caffe' \\(expected one of: sklearn, torch, keras\\)"):
        get_loader("caffe")
    (tmp_path / "m.joblib").write_bytes(b"junk")
    with pytest.raises(UserError, match="cannot load a scikit-learn model"):
        get_loader("sklearn").load(tmp_path / "m.joblib")
    base = [sys.executable, "-m", "lepton_ci.serve", "--name", "x", "--port-file", str(tmp_path / "port")]
    cases = [
        (["--model-dir", str(tmp_path), "--model-file", "m.joblib"], "cannot load a scikit-learn model"),
        (["--model-dir", str(tmp_path), "--model-file", "missing.joblib"], "model file not found"),
        (["--model-dir", str(digits_model[0]), "--model-file", "model.joblib", "--framework", "caffe"],
         "unknown model framework 'caffe'"),
    ]
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    cases.append((["--model-dir", str(digits_model[0]), "--model-file", "model.joblib",
                   "--port", str(busy.getsockname()[1])], "cannot listen on 127.0.0.1"))
    try:
        for args, needle in cases:
            r = subprocess.run(base + args, check=False, capture_output=True, text=True, timeout=60)
            assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
            assert not (tmp_path / "port").exists(), "a port file means 'ready': never written on failure"
    finally:
        busy.close()


def test_bearer_token_guards_everything_but_health(digits_model, tmp_path: Path) -> None:
    """With a token, every endpoint but the two health checks needs `Authorization: Bearer TOKEN`."""
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    proc, port = start_server(digits_model[0], tmp_path / "port", "--auth-token-file", str(token), "--workers", "1")
    base = f"http://127.0.0.1:{port}"

    def get(path: str, auth: str | None) -> tuple[int, dict[str, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", path, headers={"Authorization": auth} if auth else {})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        return resp.status, dict(resp.headers)

    try:
        assert get("/v2/health/live", None)[0] == 200 and get("/v2/health/ready", None)[0] == 200
        for path in ("/v2", f"/v2/models/{NAME}", f"/v2/models/{NAME}/ready", "/metrics"):
            status, headers = get(path, None)
            assert status == 401 and headers["www-authenticate"].startswith("Bearer"), path
            assert get(path, "Bearer wrong")[0] == 401 and get(path, "s3cret-token")[0] == 401
            assert get(path, "Bearer s3cret-token")[0] == 200, path
        assert post(base, INFER, _body(inputs=[GOOD_INPUT]))[0] == 401
        assert post(base, INFER, _body(inputs=[GOOD_INPUT]), {"Authorization": "Bearer s3cret-token"})[0] == 200
    finally:
        stop_server(proc)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    r = subprocess.run([sys.executable, "-m", "lepton_ci.serve", "--model-dir", str(digits_model[0]), "--model-file",
                        "model.joblib", "--name", "x", "--auth-token-file", str(empty)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "is empty" in r.stderr and "Traceback" not in r.stderr


def test_chunked_bodies_limits_and_metrics(digits_model, tmp_path: Path) -> None:
    """A chunked body is read up to the limit (413 past it, before the rest arrives); the metrics carry the
    batch sizes, queue depth, in-flight gauge and the model version."""
    proc, port = start_server(digits_model[0], tmp_path / "port", "--max-body-bytes", "4096", "--workers", "1")
    try:
        body = _body(inputs=[GOOD_INPUT])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", INFER, body=iter([body[:100], body[100:]]), encode_chunked=True,
                     headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["outputs"][0]["name"] == "predict"
        conn.close()
        # Sent in one piece, so the server has read all of it when it answers (closing a socket with unread
        # bytes resets it, and the client might not see the 413).
        chunk = b"bb8\r\n" + b" " * 3000 + b"\r\n"
        raw = (f"POST {INFER} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
               + chunk + chunk + b"0\r\n\r\n")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(raw)
            answer = b""
            while b"}" not in answer:
                data = sock.recv(4096)
                if not data:
                    break
                answer += data
        assert answer.startswith(b"HTTP/1.1 413") and b"over the limit of 4096" in answer, answer
        big = _body(inputs=[{**GOOD_INPUT, "shape": [100, 64], "data": [row()] * 100}])
        status, payload = post(f"http://127.0.0.1:{port}", INFER, big)
        assert status == 413 and "4096" in payload["error"]
        status, text = call("GET", f"http://127.0.0.1:{port}/metrics")
        assert status == 200, text
        for needle in (f'lepton_model_info{{framework="sklearn",model="{NAME}",version="{VERSION}"}} 1.0',
                       f'lepton_inference_batch_size_count{{model="{NAME}"}}',
                       f'lepton_inference_queue_depth{{model="{NAME}"}} 0.0',
                       f'lepton_inference_in_flight{{model="{NAME}"}} 0.0',
                       f'lepton_inference_requests_total{{model="{NAME}",status="413",version="{VERSION}"}} 2.0'):
            assert needle in text, needle
    finally:
        stop_server(proc)
