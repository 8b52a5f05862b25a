"""The PyTorch and Keras examples end to end, for real: train (real torch / TensorFlow on the CPU), gate,
tag, deploy to a local model server, report; then the real V2 client (tritonclient) asks the server and
gets what the model gives in-process. The PyTorch example first runs its learning-rate grid."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import cli, require
from tests.support.keys import PRIVATE_PEM

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KEY = {"LEPTON_CI_SIGNING_KEY": PRIVATE_PEM, "LEPTON_CI_DEVICE": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}
GRID = [0.01, 0.1, 1]


def _copy(example: str, tmp_path: Path) -> Path:
    root = tmp_path / example
    shutil.copytree(EXAMPLES / example, root, ignore=shutil.ignore_patterns(".lepton", "metrics.json", "model.*"))
    cfg = root / "lepton.yml"
    cfg.write_text(cfg.read_text().replace("command: python train.py", f"command: {sys.executable} train.py"))
    return root


@pytest.fixture()
def torch_project(tmp_path: Path):
    require("torch")
    require("safetensors")
    root = _copy("torch-linear-grid", tmp_path)
    yield root
    cli("deploy", "stop", cwd=root)


@pytest.fixture()
def keras_project(tmp_path: Path):
    require("tensorflow")
    require("keras")
    root = _copy("keras-digits-cnn", tmp_path)
    yield root
    cli("deploy", "stop", cwd=root)


def _client(endpoint: str):
    httpclient = require("tritonclient.http")
    return httpclient.InferenceServerClient(url=endpoint.removeprefix("http://"))


def _infer(endpoint: str, model: str, name: str, data, datatype: str, output: str):
    import tritonclient.http as httpclient

    client = _client(endpoint)
    assert client.is_server_live() and client.is_model_ready(model)
    inp = httpclient.InferInput(name, list(data.shape), datatype)
    inp.set_data_from_numpy(data, binary_data=True)
    out = httpclient.InferRequestedOutput(output, binary_data=True)
    return client.infer(model, [inp], outputs=[out]).as_numpy(output)


def _deployment(root: Path) -> dict:
    dep = json.loads((root / ".lepton/deployment.json").read_text())
    assert dep["status"] == "healthy", dep
    assert [h["check"] for h in dep["health"]] == ["live", "ready", "metadata", "smoke"]
    return dep


def test_torch_linear_grid_end_to_end(torch_project: Path) -> None:
    import numpy as np

    from lepton_ci.frameworks.torch import load

    # The grid: one training run per learning rate; the best by validation MSE goes through the pipeline.
    mse = {}
    for lr in GRID:
        r = cli("train", "-p", f"lr={lr}", cwd=torch_project, env=KEY, timeout=300)
        assert r.code == 0, r
        run = json.loads((torch_project / ".lepton/run.json").read_text())
        assert run["params"]["lr"] == lr
        # the PyTorch helper's per-epoch metrics and the best checkpoint's metric reached the run record
        assert {"val.mse", "train.loss", "best.val.mse", "best.step"} <= set(run["metrics"]), run["metrics"]
        assert run["metrics"]["eval.mse"] == pytest.approx(run["metrics"]["best.val.mse"], rel=1e-4)
        mse[lr] = run["metrics"]["eval.mse"]
    best = min(mse, key=mse.__getitem__)
    assert mse[best] < 0.02, mse

    r = cli("run", "-p", f"lr={best}", cwd=torch_project, env=KEY, timeout=600)
    assert r.code == 0, r
    assert "### Deployment" in r.out and "**healthy**" in r.out
    dep = _deployment(torch_project)
    client = _client(dep["endpoint"])
    meta = client.get_model_metadata("linear")
    assert meta["platform"] == "pytorch_torch-export"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}]
    x = np.linspace(-1, 1, 33, dtype=np.float32).reshape(-1, 1)
    served = _infer(dep["endpoint"], "linear", "x", x, "FP32", "y")
    local = load(torch_project / "model.pt2", device="cpu").predict({"x": x}, None)["y"]
    np.testing.assert_allclose(served, local, rtol=1e-6)
    np.testing.assert_allclose(served, 3 * x + 2, atol=0.05)
    art = {Path(a["path"]).name for a in json.loads((torch_project / ".lepton/run.json").read_text())["artifacts"]}
    assert art == {"model.pt2", "model.safetensors"}


def test_keras_digits_cnn_end_to_end(keras_project: Path) -> None:
    import numpy as np
    from sklearn.datasets import load_digits

    from lepton_ci.frameworks.keras import load

    r = cli("run", cwd=keras_project, env=KEY, timeout=900)
    assert r.code == 0, r
    run = json.loads((keras_project / ".lepton/run.json").read_text())
    # the Keras callback's per-epoch metrics and the fit's params are in the run record
    assert {"train.loss", "train.accuracy", "val.loss", "val.accuracy", "eval.accuracy"} <= set(run["metrics"])
    assert run["params"]["keras"]["epochs"] == 12
    assert run["metrics"]["eval.accuracy"] >= 0.9
    dep = _deployment(keras_project)
    meta = _client(dep["endpoint"]).get_model_metadata("digits-cnn")
    assert meta["platform"] == "keras"
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 8, 8, 1]}]
    assert meta["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 10]}]

    X, y = load_digits(return_X_y=True)
    images = (X[:40] / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    probs = _infer(dep["endpoint"], "digits-cnn", "image", images, "FP32", "probs")
    assert probs.shape == (40, 10)
    local = load(keras_project / "model.keras", device="cpu").predict({"image": images}, ["probs"])["probs"]
    np.testing.assert_allclose(probs, local, rtol=1e-4, atol=1e-6)
    assert (probs.argmax(axis=1) == y[:40]).mean() >= 0.9
