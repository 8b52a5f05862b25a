"""The model server as a real process: V2 endpoints, a real V2 client (tritonclient), bad requests."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lepton_ci.errors import UserError
from lepton_ci.frameworks import get_loader
from lepton_ci.v2client import call
from tests.e2e.helpers import require


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
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
def server(digits_model, tmp_path_factory):
    d, model, _ = digits_model
    port_file = tmp_path_factory.mktemp("srv") / "port"
    proc = subprocess.Popen([sys.executable, "-m", "lepton_ci.serve", "--model-dir", str(d), "--model-file", "model.joblib",
                             "--name", "digits", "--version", "3", "--port", "0", "--port-file", str(port_file)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not port_file.is_file():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield proc, f"http://127.0.0.1:{port_file.read_text()}"
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)


def test_real_v2_client(server, digits_model) -> None:
    httpclient = require("tritonclient.http")
    import numpy as np

    _, model, X = digits_model
    client = httpclient.InferenceServerClient(url=server[1].removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("digits")
    meta = client.get_model_metadata("digits")
    assert meta["versions"] == ["3"] and meta["platform"] == "sklearn"
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 64]}]
    assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]
    for binary in (False, True):
        inp = httpclient.InferInput("input-0", list(X.shape), "FP64")
        inp.set_data_from_numpy(X, binary_data=binary)
        outs = [httpclient.InferRequestedOutput("predict", binary_data=False),
                httpclient.InferRequestedOutput("predict_proba", binary_data=False)]
        result = client.infer("digits", [inp], outputs=outs, request_id="r1")
        assert (result.as_numpy("predict") == model.predict(X)).all()
        np.testing.assert_allclose(result.as_numpy("predict_proba"), model.predict_proba(X), rtol=1e-12)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"inputs": []}', "non-empty 'inputs'"),
        (b'{"inputs": [{"name": "input-0", "shape": [1, 64], "datatype": "FP99", "data": [0]}]}', "datatype 'FP99'"),
        (b'{"inputs": [{"name": "input-0", "shape": [1, 64], "datatype": "FP64", "data": [1, 2]}]}', "needs 64 elements, got 2"),
        (b'{"inputs": [{"name": "input-0", "shape": [1, -2], "datatype": "FP64", "data": []}]}', "non-negative"),
        (b'{"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}', "model expects 64"),
        (b'{"inputs": [{"name": "input-0", "shape": [1, 1], "datatype": "INT8", "data": ["x"]}]}', "does not fit datatype INT8"),
        (b'{"inputs": [{"name": "input-0", "shape": [1, 64], "datatype": "FP64", "data": ' + json.dumps([0] * 64).encode()
         + b'}], "outputs": [{"name": "nope"}]}', "unknown output 'nope'"),
    ],
)
def test_bad_requests_get_400_and_the_server_stays_up(server, body: bytes, needle: str) -> None:
    import urllib.request

    req = urllib.request.Request(server[1] + "/v2/models/digits/infer", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError("expected HTTP 400")
    except urllib.error.HTTPError as exc:
        assert exc.code == 400
        assert needle in json.loads(exc.read())["error"]
    assert call("GET", server[1] + "/v2/health/ready")[0] == 200


def test_routes_and_metrics(server) -> None:
    base = server[1]
    assert call("GET", base + "/v2/models/other")[0] == 404
    assert call("GET", base + "/v2/models/digits/versions/9")[0] == 404
    assert call("GET", base + "/v2/models/digits/versions/3")[1]["name"] == "digits"
    assert call("GET", base + "/v2/nothing")[0] == 404
    assert call("GET", base + "/v2")[1]["name"] == "lepton-ci"
    status, text = call("GET", base + "/metrics")
    if status == 200:
        assert "lepton_inference_requests_total" in text
    else:
        require("prometheus_client")


def test_sigterm_stops_cleanly(server) -> None:
    proc, _ = server
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_unknown_framework_and_bad_model_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown model framework 'caffe'"):
        get_loader("caffe")
    require("sklearn")
    (tmp_path / "m.joblib").write_bytes(b"junk")
    with pytest.raises(UserError, match="cannot load a scikit-learn model"):
        get_loader("sklearn").load(tmp_path / "m.joblib")
    r = subprocess.run([sys.executable, "-m", "lepton_ci.serve", "--model-dir", str(tmp_path), "--model-file", "m.joblib",
                        "--name", "x"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot load a scikit-learn model" in r.stderr and "Traceback" not in r.stderr
