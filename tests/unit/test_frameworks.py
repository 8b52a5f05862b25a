"""The loader seam, the sklearn loader and V2 tensor decoding, with real estimators and a real in-process server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from lepton_ci.errors import UserError
from lepton_ci.frameworks import LOADERS, LoadedModel, frameworks, get_loader
from tests.e2e.helpers import require


def test_importing_the_seam_and_server_pulls_in_no_framework() -> None:
    """`lepton-ci --help` and the deploy step import these; numpy/sklearn must wait until a model loads."""
    code = ("import sys, lepton_ci.frameworks, lepton_ci.frameworks.sklearn, lepton_ci.serve.__main__, lepton_ci.serve.options,"
            " lepton_ci.frameworks.torch, lepton_ci.frameworks.keras, lepton_ci.frameworks.tracker;"
            "print(sorted(m for m in ('numpy', 'sklearn', 'joblib', 'prometheus_client', 'torch', 'keras', 'tensorflow',"
            " 'skops', 'safetensors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_unknown_framework_is_a_user_error_naming_the_choices() -> None:
    with pytest.raises(UserError) as info:
        get_loader("torchscript")
    assert str(info.value) == "unknown model framework 'torchscript' (expected one of: sklearn, torch, keras)"
    assert info.value.exit_code == 2
    assert frameworks() == list(LOADERS) == ["sklearn", "torch", "keras"]
    assert all(":" in target for target in LOADERS.values())


@pytest.fixture(scope="module")
def iris():
    require("sklearn")
    from sklearn.datasets import load_iris

    return load_iris(return_X_y=True)


def test_classifier_with_string_labels(iris, tmp_path: Path) -> None:
    import numpy as np
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    from lepton_ci.frameworks.sklearn import save
    from lepton_ci.serve.v2 import decode_inputs, encode_outputs

    X, y = iris
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    est = make_pipeline(StandardScaler(), DecisionTreeClassifier(random_state=0)).fit(X, labels)
    path = save(est, tmp_path / "sub" / "model.pkl")
    model = get_loader("sklearn").load(path)
    assert isinstance(model, LoadedModel)
    assert model.metadata() == {
        "platform": "sklearn",
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [{"name": "predict", "datatype": "BYTES", "shape": [-1]},
                    {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]}],
    }
    inputs = decode_inputs(model.example_request())
    assert inputs["input-0"].shape == (1, 4)
    out, raw = encode_outputs(model.predict({"input-0": X[:5]}, ["predict", "predict_proba"]))
    assert out[0] == {"name": "predict", "shape": [5], "datatype": "BYTES", "data": est.predict(X[:5]).tolist()}
    assert out[1]["shape"] == [5, 3] and out[1]["datatype"] == "FP64" and raw == b""
    empty, raw = encode_outputs(model.predict({"input-0": np.zeros((0, 4))}, None))
    assert empty == [{"name": "predict", "shape": [0], "datatype": "BYTES", "data": []}] and raw == b""
    # The binary-data extension: each BYTES element as a 4-byte little-endian length and its bytes.
    out, raw = encode_outputs({"predict": np.array(["ab", "c"])}, frozenset({"predict"}))
    assert out == [{"name": "predict", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 11}}]
    assert raw == b"\x02\0\0\0ab\x01\0\0\0c"


def test_regressor_and_classifier_without_proba(iris, tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression, RidgeClassifier

    from lepton_ci.frameworks.sklearn import save

    X, y = iris
    reg = get_loader("sklearn").load(save(LinearRegression().fit(X, y * 1.5), tmp_path / "reg.joblib"))
    assert reg.metadata()["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
    with pytest.raises(ValueError, match="unknown output 'predict_proba' \\(available: predict\\)"):
        reg.predict({"input-0": X[:1]}, ["predict_proba"])
    ridge = RidgeClassifier().fit(X, y)
    clf = get_loader("sklearn").load(save(ridge, tmp_path / "ridge.joblib"))
    assert clf.metadata()["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [-1]}]
    assert clf.predict({"input-0": X[:3].tolist()}, None)["predict"].tolist() == ridge.predict(X[:3]).tolist()


def test_loader_refuses_files_that_are_not_models(tmp_path: Path) -> None:
    require("sklearn")
    from lepton_ci.frameworks.sklearn import save

    with pytest.raises(UserError, match="model file not found"):
        get_loader("sklearn").load(tmp_path / "nope.joblib")
    (tmp_path / "junk.joblib").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="cannot load a scikit-learn model"):
        get_loader("sklearn").load(tmp_path / "junk.joblib")
    with pytest.raises(UserError, match="holds a dict, which has no predict"):
        get_loader("sklearn").load(save({"weights": [1, 2]}, tmp_path / "dict.joblib"))


@pytest.mark.parametrize(
    ("datatype", "data", "expected"),
    [
        ("BOOL", [[True, False], [False, True]], [[True, False], [False, True]]),
        ("INT8", [-128, 127, 0, 1], [[-128, 127], [0, 1]]),
        ("UINT64", [2**64 - 1, 0, 1, 2], [[2**64 - 1, 0], [1, 2]]),
        ("FP16", [0.5, 1, 2, 3], [[0.5, 1.0], [2.0, 3.0]]),
        ("FP32", [[0.25, 1], [2, 3]], [[0.25, 1.0], [2.0, 3.0]]),
        ("BYTES", ["a", "b", "c", "d"], [["a", "b"], ["c", "d"]]),
    ],
)
def test_decode_every_datatype(datatype: str, data: list, expected: list) -> None:
    require("numpy")
    from lepton_ci.serve.v2 import V2_TO_NUMPY, decode_inputs

    arr = decode_inputs({"inputs": [{"name": "x", "shape": [2, 2], "datatype": datatype, "data": data}]})["x"]
    assert str(arr.dtype) == V2_TO_NUMPY[datatype] and arr.shape == (2, 2)
    assert arr.tolist() == expected


def test_decode_binary_tensor_data_is_little_endian() -> None:
    np = require("numpy")
    from lepton_ci.serve.v2 import decode_inputs, split_binary

    values = np.arange(6, dtype="<i4")
    header = json.dumps({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "INT32",
                                     "parameters": {"binary_data_size": values.nbytes}}]}).encode()
    request, binary = split_binary(header + values.tobytes(), str(len(header)))
    assert decode_inputs(request, binary)["x"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_in_process_server_serialises_a_model_that_is_not_thread_safe(iris) -> None:
    """V2App + ThreadedServer is the library API. A model without `thread_safe` that cannot batch gets one
    predict call at a time, however many requests arrive together."""
    from sklearn.linear_model import LogisticRegression

    from lepton_ci.frameworks.sklearn import SklearnModel
    from lepton_ci.serve.app import V2App
    from lepton_ci.serve.options import ServeOptions
    from lepton_ci.serve.runner import ThreadedServer

    X, y = iris
    inner = SklearnModel(LogisticRegression(max_iter=500).fit(X, y))
    active, peak, lock = [0], [0], threading.Lock()

    class Counting(SklearnModel):
        supports_batching = False
        thread_safe = False

        def predict(self, inputs, outputs):  # type: ignore[no-untyped-def]
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            try:
                threading.Event().wait(0.05)
                return inner.predict(inputs, outputs)
            finally:
                with lock:
                    active[0] -= 1

    server = ThreadedServer(V2App(Counting(inner.model), "iris", "7", ServeOptions()), ServeOptions()).start()
    assert server.port > 0
    url = f"http://127.0.0.1:{server.port}/v2/models/iris/versions/7/infer"
    results: list[int] = []

    def one() -> None:
        req = urllib.request.Request(url, data=json.dumps(inner.example_request()).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            results.append(json.loads(resp.read())["outputs"][0]["data"][0])

    try:
        workers = [threading.Thread(target=one) for _ in range(4)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(20)
        assert results == [int(inner.model.predict([[0.0] * 4])[0])] * 4
        assert peak[0] == 1
    finally:
        server.stop()
    assert not server.thread.is_alive()
