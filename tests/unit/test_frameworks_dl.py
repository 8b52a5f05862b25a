"""The PyTorch and Keras adapters, skops for scikit-learn, and the metric tracker: real torch, TensorFlow,
scikit-learn and skops; saved files loaded the way the model server loads them; every bad input one line."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from lepton_ci.errors import UserError
from lepton_ci.frameworks import LoadedModel, _formats, get_loader
from tests.e2e.helpers import require


def _one_line(exc: pytest.ExceptionInfo[UserError], *needles: str) -> None:
    text = str(exc.value)
    assert "\n" not in text and exc.value.exit_code == 2, text
    for needle in needles:
        assert needle in text, text


# -- datatypes and formats ------------------------------------------------------------------------------------


def test_datatype_tables_map_both_ways() -> None:
    assert set(_formats.TORCH_TO_V2.values()) == set(_formats.V2_DATATYPES) - {"BYTES"}
    assert set(_formats.KERAS_TO_V2.values()) == set(_formats.V2_DATATYPES)
    for table, back in ((_formats.TORCH_TO_V2, _formats.V2_TO_TORCH), (_formats.KERAS_TO_V2, _formats.V2_TO_KERAS)):
        assert all(back[v2] == name for name, v2 in table.items())
    # numpy has no bfloat16: BF16 travels as FP32, everything else as itself
    assert _formats.wire_datatype("BF16") == "FP32"
    assert all(_formats.wire_datatype(d) == d for d in _formats.V2_DATATYPES if d != "BF16")


def test_device_requests() -> None:
    assert _formats.requested_device("CPU") == "cpu"
    assert _formats.requested_device("gpu") == "cuda"
    assert _formats.requested_device("cuda:1") == "cuda:1"
    with pytest.raises(UserError) as info:
        _formats.requested_device("tpu")
    _one_line(info, "--device 'tpu' is not a device", "auto, cpu, cuda or cuda:N")


def test_device_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEPTON_CI_DEVICE", "cuda:x")
    with pytest.raises(UserError) as info:
        _formats.requested_device(None)
    _one_line(info, "$LEPTON_CI_DEVICE 'cuda:x' is not a device")


# -- PyTorch --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch():
    return require("torch")


def _two_input_model(torch):
    class TwoIn(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(10, 3)
            self.lin = torch.nn.Linear(4, 2)

        def forward(self, x, ids):
            h = self.lin(x) + self.emb(ids).sum(dim=1)[:, :2]
            return {"score": h, "label": h.argmax(dim=1)}

    torch.manual_seed(0)
    return TwoIn()


def test_torch_export_roundtrip_with_metadata_and_batching(torch, tmp_path: Path) -> None:
    import numpy as np

    from lepton_ci.frameworks import torch as lt

    model = _two_input_model(torch)
    path = lt.save(model, tmp_path / "m.pt2", (torch.zeros(3, 4), torch.zeros(3, 5, dtype=torch.int64)),
                   input_names=["x", "ids"])
    assert _formats.sniff(path) == "torch-export"
    loaded = get_loader("torch").load(path)
    assert isinstance(loaded, LoadedModel) and loaded.supports_batching
    assert loaded.metadata() == {
        "platform": "pytorch_torch-export",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]},
                   {"name": "ids", "datatype": "INT64", "shape": [-1, 5]}],
        "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1, 2]},
                    {"name": "label", "datatype": "INT64", "shape": [-1]}],
    }
    rng = np.random.default_rng(0)
    x, ids = rng.normal(size=(7, 4)).astype(np.float32), rng.integers(0, 10, size=(7, 5))
    with torch.no_grad():
        expected = model(torch.from_numpy(x), torch.from_numpy(ids))
    got = loaded.predict({"x": x, "ids": ids}, None)
    np.testing.assert_allclose(got["score"], expected["score"].numpy(), rtol=1e-6)
    assert got["label"].tolist() == expected["label"].tolist()
    # the batching contract: row by row (batch 1, sent as a vector too) equals the whole batch
    for i in range(7):
        one = loaded.predict({"x": x[i], "ids": ids[i]}, ["score"])
        np.testing.assert_allclose(one["score"][0], got["score"][i], rtol=1e-5)
    empty = loaded.predict({"x": x[:0], "ids": ids[:0]}, None)
    assert empty["score"].shape == (0, 2) and empty["label"].shape == (0,)
    # FP64 sent for an FP32 input is cast; a float where an integer is expected is a 400
    assert loaded.predict({"x": x.astype(np.float64), "ids": ids}, ["label"])["label"].shape == (7,)
    for bad, message in (
        ({"x": x}, "missing input 'ids'"),
        ({"x": x, "ids": ids, "z": x}, "unknown input 'z'"),
        ({"x": x[:, :3], "ids": ids}, "input 'x' must have shape [-1, 4]"),
        ({"x": x, "ids": ids[:3]}, "input 'ids' has 3 rows"),
        ({"x": x, "ids": ids.astype(np.float32)}, "input 'ids' must be INT64"),
    ):
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            loaded.predict(bad, None)
    with pytest.raises(ValueError, match="unknown output 'nope'"):
        loaded.predict({"x": x, "ids": ids}, ["nope"])
    request = loaded.example_request()
    assert [t["shape"] for t in request["inputs"]] == [[1, 4], [1, 5]]
    # weights as safetensors beside the model: tensors only, equal to the state dict
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "m.safetensors"))
    assert set(weights) == set(model.state_dict())
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_torch_falls_back_to_torchscript(torch, tmp_path: Path) -> None:
    import numpy as np

    from lepton_ci.frameworks import torch as lt

    class Branchy(torch.nn.Module):  # data-dependent control flow: torch.export refuses it, TorchScript takes it
        def forward(self, x):
            if bool(x.sum() > 0):
                return x * 2
            return x - 1

    path = lt.save(Branchy(), tmp_path / "branchy.pt2", torch.ones(2, 3))
    assert _formats.sniff(path) == "torchscript"
    loaded = lt.load(path)
    assert loaded.metadata()["platform"] == "pytorch_torchscript"
    assert loaded.predict({"input-0": np.ones((1, 3), np.float32)}, None)["output-0"].tolist() == [[2, 2, 2]]


def test_torch_bf16_travels_as_fp32(torch, tmp_path: Path) -> None:
    import numpy as np

    from lepton_ci.frameworks import torch as lt

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).to(torch.bfloat16)
    path = lt.save(model, tmp_path / "bf16.pt2", torch.zeros(2, 3, dtype=torch.bfloat16))
    loaded = lt.load(path)
    assert loaded.spec["inputs"][0]["datatype"] == "BF16"  # what the model takes, kept in the archive
    meta = loaded.metadata()
    assert meta["inputs"][0]["datatype"] == meta["outputs"][0]["datatype"] == "FP32"  # what the server carries
    out = loaded.predict({"input-0": np.ones((4, 3), np.float32)}, None)["output-0"]
    assert out.dtype == np.float32 and out.shape == (4, 2)
    with torch.no_grad():
        expected = model(torch.ones(4, 3, dtype=torch.bfloat16)).float().numpy()
    np.testing.assert_allclose(out, expected)


def test_torch_loader_refuses_what_is_not_its_format(torch, tmp_path: Path) -> None:
    from lepton_ci.frameworks import torch as lt

    pickled = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(1, 1), pickled)
    with pytest.raises(UserError) as info:
        lt.load(pickled)
    _one_line(info, "pickled torch.save file", "runs arbitrary code", "lepton_ci.frameworks.torch.save")
    plain = tmp_path / "model.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(UserError) as info:
        lt.load(plain)
    _one_line(info, "pickle/joblib file", "runs arbitrary code")
    good = lt.save(torch.nn.Linear(1, 1), tmp_path / "good.pt2", torch.zeros(2, 1))
    broken = tmp_path / "broken.pt2"
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError) as info:
        lt.load(broken)
    _one_line(info, "broken.pt2")
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"hello, not a model")
    with pytest.raises(UserError) as info:
        lt.load(junk)
    _one_line(info, "not a model file lepton-ci knows")
    with pytest.raises(UserError) as info:
        lt.load(tmp_path / "absent.pt2")
    _one_line(info, "model file not found")


def test_cuda_request_without_a_gpu_is_one_line(torch, tmp_path: Path) -> None:
    from lepton_ci.frameworks import torch as lt

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert str(lt.device(None)) == "cpu"  # auto
    with pytest.raises(UserError) as info:
        lt.device("cuda")
    _one_line(info, "device 'cuda' was requested", "PyTorch sees no GPU", "torch.cuda.is_available() is False")
    path = lt.save(torch.nn.Linear(1, 1), tmp_path / "m.pt2", torch.zeros(2, 1))
    with pytest.raises(UserError) as info:
        lt.load(path, device="cuda:0")
    _one_line(info, "device 'cuda:0' was requested")


def test_keras_cuda_request_without_a_gpu_is_one_line(keras) -> None:
    import tensorflow as tf

    from lepton_ci.frameworks import keras as lk

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    assert lk.device(None) == "/CPU:0" and lk.device("cpu") == "/CPU:0"
    with pytest.raises(UserError) as info:
        lk.device("gpu")
    _one_line(info, "device 'cuda' was requested", "TensorFlow sees no GPU", "lists 0 GPU(s)")


def test_best_checkpoint_keeps_the_best_weights(torch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lepton_ci.frameworks import torch as lt

    monkeypatch.setenv("LEPTON_CI_RUN_DIR", str(tmp_path / "run"))
    model = torch.nn.Linear(1, 1)
    best = lt.BestCheckpoint(monitor="val.loss", mode="min")
    with torch.no_grad():
        model.weight.fill_(1.0)
    assert best.update(model, torch.tensor(0.5), step=0)
    with torch.no_grad():
        model.weight.fill_(9.0)
    assert not best.update(model, 0.7, step=1)
    path = best.save(model, tmp_path / "best.pt2", torch.zeros(2, 1))
    assert model.weight.item() == 1.0  # restored before saving
    assert lt.load(path).module.state_dict()["weight"].item() == 1.0
    lt.log_metrics({"done": torch.tensor(1)})  # flushed below (and at exit)
    from lepton_ci.frameworks.tracker import default_tracker

    default_tracker().flush()
    logged = json.loads((tmp_path / "run" / "logged_metrics.json").read_text())
    assert logged == {"best.val.loss": 0.5, "best.step": 0, "done": 1}


# -- Keras ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras():
    require("tensorflow")
    return require("keras")


def test_keras_functional_model_roundtrip(keras, tmp_path: Path) -> None:
    import numpy as np

    from lepton_ci.frameworks import keras as lk

    image = keras.Input((4, 4, 1), name="image")
    extra = keras.Input((2,), name="extra")
    h = keras.layers.Concatenate()([keras.layers.Flatten()(image), extra])
    probs = keras.layers.Dense(3, activation="softmax", name="probs")(h)
    value = keras.layers.Dense(1, name="value")(h)
    model = keras.Model([image, extra], {"probs": probs, "value": value})
    path = lk.save(model, tmp_path / "m.keras")
    assert _formats.sniff(path) == "keras"
    loaded = get_loader("keras").load(path)
    meta = loaded.metadata()
    assert meta["platform"] == "keras"
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 4, 4, 1]},
                              {"name": "extra", "datatype": "FP32", "shape": [-1, 2]}]
    assert sorted(o["name"] for o in meta["outputs"]) == ["probs", "value"]
    rng = np.random.default_rng(1)
    x, e = rng.normal(size=(6, 4, 4, 1)).astype(np.float32), rng.normal(size=(6, 2)).astype(np.float32)
    expected = model.predict([x, e], verbose=0)
    got = loaded.predict({"image": x, "extra": e}, None)
    np.testing.assert_allclose(got["probs"], expected["probs"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["value"], expected["value"], rtol=1e-5, atol=1e-6)
    one = loaded.predict({"image": x[2], "extra": e[2]}, ["value"])
    np.testing.assert_allclose(one["value"][0], got["value"][2], rtol=1e-5, atol=1e-6)
    assert loaded.predict({"image": x[:0], "extra": e[:0]}, ["probs"])["probs"].shape == (0, 3)
    with pytest.raises(ValueError, match="missing input 'extra'"):
        loaded.predict({"image": x}, None)


def test_keras_safe_mode_refuses_code_and_other_formats(keras, tmp_path: Path) -> None:
    from lepton_ci.frameworks import keras as lk

    inp = keras.Input((2,), name="x")
    model = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2)(inp))
    path = lk.save(model, tmp_path / "lambda.keras")
    with pytest.raises(UserError) as info:
        lk.load(path)
    _one_line(info, "cannot load the Keras model", "safe_mode")
    pkl = tmp_path / "model.keras"
    pkl.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(UserError) as info:
        lk.load(pkl)
    _one_line(info, "runs arbitrary code", "the keras loader only loads a Keras .keras archive")
    torch = require("torch")
    from lepton_ci.frameworks import torch as lt

    pt2 = lt.save(torch.nn.Linear(1, 1), tmp_path / "t.pt2", torch.zeros(2, 1), weights=False)
    with pytest.raises(UserError) as info:
        lk.load(pt2)
    _one_line(info, "is a PyTorch torch.export archive (.pt2), not a Keras .keras archive", "model.framework")
    with pytest.raises(UserError) as info:
        get_loader("torch").load(path)
    _one_line(info, "is a Keras .keras archive, not a torch.export (.pt2) or TorchScript archive")
    with pytest.raises(UserError) as info:
        lk.save(model, tmp_path / "m.h5")
    _one_line(info, "served from the .keras format")


def test_keras_callback_writes_epochs_into_the_run(keras, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from lepton_ci.frameworks import keras as lk

    monkeypatch.setenv("LEPTON_CI_RUN_DIR", str(tmp_path))
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    x = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
    model.fit(x, x.sum(axis=1), validation_split=0.25, epochs=3, verbose=0, callbacks=[lk.metrics_callback()])
    logged = json.loads((tmp_path / "logged_metrics.json").read_text())
    assert {"train.loss", "train.mae", "val.loss", "val.mae"} <= set(logged)
    history = [json.loads(line) for line in (tmp_path / "logged_metrics_history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [0, 1, 2]
    assert json.loads((tmp_path / "logged_params.json").read_text())["keras"]["epochs"] == 3


# -- scikit-learn with skops -----------------------------------------------------------------------------------


def test_skops_roundtrip_policy_and_scoring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require("sklearn")
    require("skops")
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from lepton_ci.frameworks import sklearn as ls

    X, y = load_iris(return_X_y=True)
    est = LogisticRegression(max_iter=500).fit(X, y)
    path = ls.save(est, tmp_path / "m.skops")
    assert _formats.sniff(path) == "skops"
    loaded = get_loader("sklearn").load(path)
    assert (loaded.predict({"input-0": X}, None)["predict"] == est.predict(X)).all()
    # a pickle named .skops is refused, not unpickled
    fake = tmp_path / "fake.skops"
    fake.write_bytes(pickle.dumps(est))
    with pytest.raises(UserError) as info:
        get_loader("sklearn").load(fake)
    _one_line(info, "fake.skops is a pickle/joblib file, which runs arbitrary code")
    # a type outside the trusted-types policy is refused before anything is built
    import skops.io

    odd = tmp_path / "odd.skops"
    skops.io.dump({"model": est, "thing": _formats.UserError("x")}, odd)
    with pytest.raises(UserError) as info:
        get_loader("sklearn").load(odd)
    _one_line(info, "lepton_ci.errors.UserError", "outside the trusted-types policy")
    # joblib keeps working
    joblib_path = ls.save(est, tmp_path / "m.joblib")
    assert np.array_equal(get_loader("sklearn").load(joblib_path).predict({"input-0": X[:3]}, None)["predict"],
                          est.predict(X[:3]))
    # scoring into the run record
    monkeypatch.setenv("LEPTON_CI_RUN_DIR", str(tmp_path / "run"))
    scores = ls.log_scores(est, X, y, scoring=["accuracy", "neg_log_loss"])
    assert set(scores) == {"eval.accuracy", "eval.log_loss"} and scores["eval.log_loss"] > 0
    ls.log_estimator_params(est)
    assert json.loads((tmp_path / "run" / "logged_metrics.json").read_text()) == scores
    assert json.loads((tmp_path / "run" / "logged_params.json").read_text())["estimator"]["max_iter"] == 500


# -- the tracker ---------------------------------------------------------------------------------------------


def test_tracker_buffers_validates_and_flushes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from lepton_ci.frameworks.tracker import Tracker

    monkeypatch.setenv("LEPTON_CI_RUN_DIR", str(tmp_path))
    t = Tracker(flush_every_s=3600)
    t.log("loss", 1.5, step=0)
    t.log("acc", np.float32(0.5), step=0)
    t.log_metrics({"loss": 1.0, "eval": {"n": np.int64(3)}}, step=1)
    assert not (tmp_path / "logged_metrics.json").exists()  # nothing written before the flush
    for bad, message in ((float("nan"), "is nan"), ("x", "must be a number"), (True, "must be a number"),
                         (np.zeros(2), "must be a number")):
        with pytest.raises(ValueError, match=message):
            t.log("bad", bad)
    t.close()
    assert json.loads((tmp_path / "logged_metrics.json").read_text()) == {"loss": 1.0, "acc": 0.5, "eval.n": 3}
    lines = [json.loads(x) for x in (tmp_path / "logged_metrics_history.jsonl").read_text().splitlines()]
    assert [(x["step"], x["metrics"]) for x in lines] == [(0, {"loss": 1.5, "acc": 0.5}),
                                                          (1, {"loss": 1.0, "eval.n": 3})]


# -- the model server, as deploy starts it -------------------------------------------------------------------


def test_server_refuses_a_pickle_for_torch_in_one_line(torch, tmp_path: Path) -> None:
    torch.save(torch.nn.Linear(1, 1), tmp_path / "model.pt2")
    r = subprocess.run(
        [sys.executable, "-I", "-m", "lepton_ci.serve", "--model-dir", str(tmp_path), "--model-file", "model.pt2",
         "--framework", "torch", "--name", "m", "--workers", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "runs arbitrary code" in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_missing_framework_names_the_extra(tmp_path: Path) -> None:
    """With torch and keras unimportable, loading says which extra to install (one line, exit 2)."""
    (tmp_path / "m.pt2").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['keras'] = None\n"
        "from lepton_ci.frameworks import torch as lt, keras as lk\n"
        "for f in (lambda: lt.device('cpu'), lambda: lk.metrics_callback()):\n"
        "    try: f()\n"
        "    except Exception as e: print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.splitlines() == [
        "UserError PyTorch models need torch, which is not installed: pip install 'lepton-ci[torch]'",
        "UserError Keras models need keras (with tensorflow), which is not installed: "
        "pip install 'lepton-ci[tensorflow]'",
    ]
