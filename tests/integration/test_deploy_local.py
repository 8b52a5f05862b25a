"""Deploy to the local target for real: the digits example trained with scikit-learn, served by the
model server process, checked with a real V2 client (tritonclient), rolled back, stopped."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import assert_one_line_error, cli, require
from tests.support.keys import OTHER_PRIVATE_PEM, PRIVATE_PEM

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sklearn-digits"
KEY = {"LEPTON_CI_SIGNING_KEY": PRIVATE_PEM}


def _v2_client(endpoint: str):
    httpclient = require("tritonclient.http")
    return httpclient.InferenceServerClient(url=endpoint.removeprefix("http://"))


@pytest.fixture()
def project(tmp_path: Path):
    require("sklearn")
    root = tmp_path / "digits"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".lepton", "metrics.json", "model.joblib"))
    cfg = (root / "lepton.yml").read_text().replace("command: python train.py", f"command: {sys.executable} train.py")
    (root / "lepton.yml").write_text(cfg)
    yield root
    cli("deploy", "stop", cwd=root)


def _infer(endpoint: str, model: str, rows):
    import numpy as np
    import tritonclient.http as httpclient

    client = _v2_client(endpoint)
    assert client.is_server_live() and client.is_model_ready(model)
    meta = client.get_model_metadata(model)
    assert meta["name"] == model and meta["inputs"][0]["shape"][-1] == 64
    data = np.asarray(rows, dtype=np.float64)
    inp = httpclient.InferInput(meta["inputs"][0]["name"], list(data.shape), "FP64")
    inp.set_data_from_numpy(data, binary_data=False)
    out = httpclient.InferRequestedOutput("predict", binary_data=False)
    return client.infer(model, [inp], outputs=[out]).as_numpy("predict")


def test_pipeline_deploys_then_gates_and_rolls_back(project: Path) -> None:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    cfg = project / "lepton.yml"
    cfg.write_text(cfg.read_text() + "  server:\n    workers: 2\n    max_batch_size: 16\n    access_log: true\n")
    r = cli("run", "-p", "C=1.0", cwd=project, env=KEY, timeout=300)
    assert r.code == 0, r
    dep = json.loads((project / ".lepton/deployment.json").read_text())
    assert dep["status"] == "healthy" and dep["version"] == 1 and dep["endpoint"].startswith("http://127.0.0.1:")
    # deploy.server reaches the server: two workers, batches of at most 16 rows, one access-log line per request.
    assert dep["state"]["command"][20:] == ["--workers", "2", "--max-batch-size", "16", "--access-log"]
    log = Path(dep["state"]["log"]).read_text()
    assert "with 2 worker(s)" in log and '"path":"/v2/models/digits/infer"' in log
    assert [h["check"] for h in dep["health"]] == ["live", "ready", "metadata", "smoke"]
    assert all(h["passed"] for h in dep["health"])
    assert "### Deployment" in r.out and "**healthy**" in r.out
    pred = _infer(dep["endpoint"], "digits", X[:20])
    assert (pred.astype(int) == y[:20]).mean() >= 0.9
    shown = json.loads(cli("registry", "show", "production", "--json", cwd=project).out)
    assert shown["version"] == 1

    # A second version with other params is gated against production and deployed blue/green.
    r = cli("run", "-p", "C=0.5", cwd=project, env=KEY, timeout=300)
    assert r.code == 0, r
    dep2 = json.loads((project / ".lepton/deployment.json").read_text())
    assert dep2["version"] == 2 and dep2["previous"]["version"] == 1 and dep2["endpoint"] != dep["endpoint"]
    gate = json.loads((project / ".lepton/gate.json").read_text())
    assert gate["baseline"]["version"] == 1 and gate["verdict"] == "pass"
    status = cli("deploy", "status", cwd=project)
    assert status.code == 0 and "digits v2 on local: healthy" in status.out, status
    assert json.loads(cli("deploy", "status", "--json", cwd=project).out)["status"] == "healthy"
    # blue/green: the old server was stopped once the new one was healthy
    from lepton_ci.v2client import check

    assert check("live", "GET", dep["endpoint"] + "/v2/health/live")["passed"] is False

    r = cli("deploy", "rollback", cwd=project, env=KEY, timeout=120)
    assert r.code == 0 and "digits v1 on local: healthy" in r.out, r
    assert json.loads(cli("registry", "show", "production", "--json", cwd=project).out)["version"] == 1
    dep3 = json.loads((project / ".lepton/deployment.json").read_text())
    assert len(_infer(dep3["endpoint"], "digits", X[:3])) == 3

    r = cli("deploy", "stop", cwd=project)
    assert r.code == 0 and "stopped" in r.out
    r = cli("deploy", "status", cwd=project)
    assert r.code == 1


def test_deploy_refuses_unblessed_versions(project: Path) -> None:
    assert cli("train", cwd=project, env=KEY, timeout=300).code == 0
    # tagged without a gate record
    with open(project / "lepton.yml", "a") as f:
        f.write("tag:\n  require_gate: false\n")
    assert cli("tag", cwd=project).code == 0
    assert_one_line_error(cli("deploy", cwd=project, env=KEY), 1, "refusing to deploy digits v1", "no gate record")
    # gated without a key: unsigned
    assert cli("gate", cwd=project).code == 0
    assert cli("tag", cwd=project).code == 0
    assert_one_line_error(cli("deploy", cwd=project, env=KEY), 1, "refusing to deploy digits v2", "unsigned")
    # signed with another key
    assert cli("gate", cwd=project, env={"LEPTON_CI_SIGNING_KEY": OTHER_PRIVATE_PEM}).code == 0
    assert cli("tag", cwd=project).code == 0
    assert_one_line_error(cli("deploy", cwd=project, env=KEY), 1, "refusing to deploy digits v3", "not a trusted key")
    # the escape hatch works and is recorded
    r = cli("deploy", "--allow-unblessed", cwd=project, env=KEY, timeout=120)
    assert r.code == 0, r
    assert "warning: --allow-unblessed" in r.err
    assert "not a trusted key" in json.loads((project / ".lepton/deployment.json").read_text())["unblessed"]
    assert_one_line_error(cli("deploy", "--version", "production2", cwd=project, env=KEY), 2, "no alias 'production2'")


def test_failed_rollout_keeps_the_old_version_serving(project: Path) -> None:
    assert cli("run", cwd=project, env=KEY, timeout=300).code == 0
    old = json.loads((project / ".lepton/deployment.json").read_text())
    # train a "model" the server cannot load: the new server must fail and the old one keep serving
    (project / "train.py").write_text(
        "import json\njson.dump({'eval': {'accuracy': 0.97, 'f1_macro': 0.97, 'log_loss': 0.1}}, open('metrics.json','w'))\n"
        "open('model.joblib','wb').write(b'not a model')\n")
    r = cli("run", cwd=project, env=KEY, timeout=300)
    assert_one_line_error(r, 1, "deploy of digits v2 failed", "keeps serving")
    assert json.loads((project / ".lepton/deployment.json").read_text())["version"] == 1
    failed = json.loads((project / ".lepton/deployment.failed.json").read_text())
    assert failed["status"] == "failed" and failed["version"] == 2
    assert cli("deploy", "status", cwd=project).code == 0
    assert json.loads(cli("registry", "show", "production", "--json", cwd=project).out)["version"] == 1
    assert old["endpoint"] == json.loads((project / ".lepton/deployment.json").read_text())["endpoint"]


def test_the_server_imports_nothing_from_the_checkout_and_serves_a_private_copy(project: Path) -> None:
    """A `joblib.py` in the repository must not run inside the server that loads a blessed model, and the
    files the server loads are a private copy (another user cannot swap them after verification)."""
    for step in ("train", "gate", "tag"):
        assert cli(step, cwd=project, env=KEY, timeout=300).code == 0
    (project / "joblib.py").write_text("open('SHADOW_RAN', 'w').write('ran')\nraise SystemExit('shadowed')\n")
    r = cli("deploy", cwd=project, env=KEY, timeout=300)
    assert r.code == 0, r
    assert not any(project.rglob("SHADOW_RAN")), "a module from the checkout ran inside the model server"
    dep = json.loads((project / ".lepton/deployment.json").read_text())
    copy = Path(dep["state"]["model_copy"])
    assert copy.is_dir() and copy.stat().st_mode & 0o077 == 0
    assert "-I" in dep["state"]["command"]
    assert cli("deploy", "stop", cwd=project).code == 0
    assert not copy.exists()


def test_pipeline_on_an_encrypted_oci_registry(project: Path, tmp_path: Path) -> None:
    """The same steps unchanged against oci:// with encryption at rest: tag pushes ciphertext, deploy fetches,
    decrypts and verifies the bytes the gate signed, and the server answers."""
    from sklearn.datasets import load_digits

    from lepton_ci.registry import open_registry
    from lepton_ci.registry.encryption import new_key_text
    from tests.support.oci_registry import RegistryServer

    X, y = load_digits(return_X_y=True)
    with RegistryServer(tmp_path / "registry") as server:
        env = {**KEY, "LEPTON_CI_REGISTRY": server.url(), "LEPTON_CI_REGISTRY_KEY": new_key_text()}
        r = cli("run", "-p", "C=1.0", cwd=project, env=env, timeout=300)
        assert r.code == 0, r
        dep = json.loads((project / ".lepton/deployment.json").read_text())
        assert dep["status"] == "healthy" and dep["version"] == 1
        assert (_infer(dep["endpoint"], "digits", X[:20]).astype(int) == y[:20]).mean() >= 0.9
        art = open_registry(server.url(), project).get("digits", 1).artifacts[0]
        assert art["stored"]["sha256"] != art["sha256"]  # the registry holds ciphertext
        assert not server.blob_path(art["sha256"]).exists() and server.blob_path(art["stored"]["sha256"]).exists()
        assert cli("deploy", "stop", cwd=project).code == 0
        # Without the key (and without the verified plaintext deploy cached last time), deploy cannot read the
        # files and says so in one line.
        shutil.rmtree(project / ".lepton/deploy/models")
        r = cli("deploy", cwd=project, env={**env, "LEPTON_CI_REGISTRY_KEY": ""}, timeout=120)
        assert_one_line_error(r, 2, "is encrypted", "LEPTON_CI_REGISTRY_KEY")
