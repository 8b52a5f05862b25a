"""SLO-guarded rollout, for real: a deliberately broken version under load is rolled back automatically,
and not one client request fails.

The broken version is a real scikit-learn pipeline, blessed by the real gate: it casts its input to int
and looks every value up in a table of 0..16 (`functools.partial(np.take, table)` in a
FunctionTransformer) before the classifier. Digits pixels are 0..16, so it trains, passes the gate and
answers the smoke request (zeros); a row holding 100 raises IndexError, which the model server answers
with 500. Only numpy, functools and scikit-learn are pickled, so the server (`python -I`, in its own
directory) loads it like any model. The good versions are the same pipeline without the lookup.

The load generator talks to the deployment's endpoint, the local target's router: during the watch the
new version is the canary (every request goes to it first) and its 500s are answered again by the old
version. The new server's own counters (its /metrics, or a real Prometheus scraping it through the
file_sd targets file the local target writes) show the errors, and the watch rolls back.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.helpers import cli, require
from tests.support import loadgen
from tests.support.keys import PRIVATE_PEM

KEY = {"LEPTON_CI_SIGNING_KEY": PRIVATE_PEM}

TRAIN = """\
import functools, json
import joblib
import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
import lepton_ci

p = {"C": 1.0, "broken": 0, **lepton_ci.params()}
X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
steps = [FunctionTransformer(np.int64)]
if int(p["broken"]):
    steps.append(FunctionTransformer(functools.partial(np.take, np.arange(17.0))))
model = make_pipeline(*steps, StandardScaler(), LogisticRegression(C=float(p["C"]), max_iter=300))
model.fit(X_train, y_train)
with open("metrics.json", "w") as f:
    json.dump({"eval": {"accuracy": accuracy_score(y_test, model.predict(X_test))}}, f)
joblib.dump(model, "model.joblib")
"""

CONFIG = """\
version: 1
model:
  name: slo
  framework: sklearn
  file: model.joblib
train:
  command: {python} train.py
  metrics: [metrics.json]
  artifacts: [model.joblib]
gate:
  baseline: production
  rules:
    - metric: eval.accuracy
      min: 0.8
      max_drop: 0.05
registry: file://.lepton/registry
deploy:
  target: local
  server:
    workers: 1
  slo:
    window: {window}
    interval: 0.5
    max_error_rate: 0.05
    min_requests: 20
{extra}"""

# One digits-shaped row with a pixel of 100: fine for the good versions, an IndexError for the broken one.
ROW = [0.0] * 64
ROW[5] = 100.0
PAYLOAD = json.dumps({"inputs": [{"name": "input-0", "shape": [1, 64], "datatype": "FP64", "data": ROW}]}).encode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Load:
    """loadgen's connections against the router, in a thread, until stopped."""

    def __init__(self, endpoint: str, connections: int = 4) -> None:
        host, port = endpoint.removeprefix("http://").rsplit(":", 1)
        self.host, self.port, self.connections = host, int(port), connections
        self.result: loadgen.Result | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        stop = asyncio.Event()

        async def watch() -> None:
            while not self._stop.is_set():
                await asyncio.sleep(0.05)
            stop.set()

        request = loadgen.request_bytes(
            "POST", "/v2/models/slo/infer", PAYLOAD, {"Content-Type": "application/json"}
        )
        watcher = asyncio.ensure_future(watch())
        self.result = await loadgen.load(self.host, self.port, request, self.connections, 600, stop)
        watcher.cancel()

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def _prometheus(tmp: Path, targets: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI") == "true" or os.environ.get("LEPTON_PROMTOOL"):
            pytest.fail("prometheus is missing: scripts/deps/60-prometheus.sh installs it")
        pytest.skip("prometheus is missing (apt-get install prometheus)")
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: lepton\n    file_sd_configs:\n"
        f"      - files: [{json.dumps(str(targets))}]\n        refresh_interval: 1s\n"
    )
    port = _free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=open(tmp / "prometheus.log", "wb"),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    pytest.fail(f"prometheus did not become ready: {(tmp / 'prometheus.log').read_text()[-2000:]}")


@pytest.fixture(params=["metrics", "prometheus"])
def project(request, tmp_path: Path):
    require("sklearn")
    require("prometheus_client")
    root = tmp_path / "slo"
    root.mkdir()
    (root / "train.py").write_text(TRAIN)
    extra = ""
    prom = None
    if request.param == "prometheus":
        prom, url = _prometheus(tmp_path, root / ".lepton" / "deploy" / "prometheus-targets.json")
        extra = f"    prometheus: {url}\n    job: lepton\n"
    window = 10 if request.param == "prometheus" else 6
    (root / "lepton.yml").write_text(CONFIG.format(python=sys.executable, window=window, extra=extra))
    yield root
    cli("deploy", "stop", cwd=root)
    if prom is not None:
        prom.terminate()
        prom.wait(30)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]


def test_broken_version_is_rolled_back_under_load_with_zero_failed_requests(project: Path) -> None:
    r = cli("run", "-p", "C=1.0", cwd=project, env=KEY, timeout=300)
    assert r.code == 0, r
    first = json.loads((project / ".lepton/deployment.json").read_text())
    assert first["version"] == 1 and first["status"] == "healthy" and first["slo"]["passed"]
    endpoint = first["endpoint"]
    assert endpoint != first["state"]["server_endpoint"]  # the router, not the server

    with Load(endpoint) as load:
        time.sleep(1.0)
        r = cli("run", "-p", "broken=1", cwd=project, env=KEY, timeout=300)
        time.sleep(1.0)
    assert r.code == 1, r
    assert "rolled back" in r.err and "error rate" in r.err, r

    failed = json.loads((project / ".lepton/deployment.failed.json").read_text())
    watch = failed["slo"]
    assert failed["version"] == 2 and failed["status"] == "failed" and watch["passed"] is False
    assert "error rate" in watch["reason"]
    if "prometheus:" in (project / "lepton.yml").read_text():  # the numbers came from PromQL queries
        assert 'job="lepton"' in watch["source"] and "/metrics" not in watch["source"]
    breach = watch["samples"][-1]
    assert breach["verdict"] == "breach" and breach["errors"] >= 20 * 0.05 and breach["requests"] >= 20
    assert not _alive(failed["state"]["pid"])  # the broken server is gone

    current = json.loads((project / ".lepton/deployment.json").read_text())
    assert current["version"] == 1 and current["endpoint"] == endpoint
    shown = json.loads(cli("registry", "show", "production", "--json", cwd=project).out)
    assert shown["version"] == 1  # the alias never moved

    assert load.result is not None
    statuses = load.result.statuses()
    failures = [s for s in load.result.samples if s.status != 200][:5]
    assert not failures, (statuses, failures)
    assert statuses.get(200, 0) >= 50, statuses

    report = (project / ".lepton/report.md").read_text()
    assert "### SLO watch" in report and "rolled back" in report and "breach" in report

    # A good version under the same load: it passes the watch, takes the traffic, the old server stops.
    with Load(endpoint) as load:
        time.sleep(0.5)
        r = cli("run", "-p", "C=0.5", cwd=project, env=KEY, timeout=300)
        time.sleep(1.0)
    assert r.code == 0, r
    third = json.loads((project / ".lepton/deployment.json").read_text())
    assert third["version"] == 3 and third["slo"]["passed"] and third["endpoint"] == endpoint
    assert third["slo"]["samples"][-1]["requests"] >= 20
    assert not _alive(first["state"]["pid"])
    assert load.result is not None
    assert not [s for s in load.result.samples if s.status != 200][:5], load.result.statuses()
