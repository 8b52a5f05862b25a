"""The docker deploy target against the real Docker engine: blue/green containers behind a router container.

The serving image is the base of the session's one full `lepton-ci build` (tests/support/serving_base.py):
lepton-ci and scikit-learn at this venv's versions (the build pins the training run's, and the models
here are pickled by this venv too), pushed to a real distribution registry and named by digest, as
`deploy.image` must be. It holds no model: the target copies each version's verified files into its
container. The
scikit-learn project (and the deliberately broken version: a lookup table that raises IndexError on a
pixel of 100) is test_deploy_slo.py's, and so is its load generator against the stable endpoint.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import assert_one_line_error, cli, require
from tests.integration.test_deploy_slo import PAYLOAD, TRAIN, Load
from tests.support.keys import PRIVATE_PEM
from tests.support.oci_registry import RegistryServer, free_port
from tests.support.serving_base import ServingBase

KEY = {"LEPTON_CI_SIGNING_KEY": PRIVATE_PEM}
MODEL = "slo"  # test_deploy_slo's load generator posts to /v2/models/slo/infer
DEPLOYMENT = "ai.lepton.deployment"

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
  target: docker
  image: {image}
  ready_timeout: 120
  server:
    workers: 1
  docker:
    name: {name}
    port: {port}
{extra}"""

SLO = """\
  slo:
    window: 6
    interval: 0.5
    max_error_rate: 0.05
    min_requests: 20
"""


@dataclass
class Engine:
    client: Any
    registry: RegistryServer
    image: str  # HOST/REPO@sha256:DIGEST

    def containers(self, **labels: str) -> list[Any]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        return list(self.client.containers.list(all=True, filters=filters))


@pytest.fixture(scope="module")
def engine(serving_base: ServingBase) -> Engine:
    require("sklearn")
    require("prometheus_client")
    docker = require("docker")
    return Engine(docker.from_env(timeout=600), serving_base.registry, serving_base.base_ref)


@dataclass
class Project:
    root: Path
    engine: Engine
    name: str
    port: int

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Any:
        return cli(*args, cwd=self.root, env={**KEY, **(env or {})}, timeout=timeout)

    def record(self, name: str = "deployment.json") -> dict[str, Any]:
        return json.loads((self.root / ".lepton" / name).read_text())

    def ours(self) -> list[Any]:
        """Every container of this project, whatever its deployment id."""
        return [
            c for c in self.engine.containers(**{"ai.lepton.model.name": MODEL}) if c.name.startswith(self.name + "-")
        ]


def _project(tmp_path: Path, engine: Engine, image: str | None = None, extra: str = "") -> Iterator[Project]:
    root = tmp_path / "proj"
    root.mkdir(parents=True)
    (root / "train.py").write_text(TRAIN)
    name, port = f"lepton-t{free_port()}", free_port()
    (root / "lepton.yml").write_text(
        CONFIG.format(python=sys.executable, image=image or engine.image, name=name, port=port, extra=extra)
    )
    p = Project(root, engine, name, port)
    yield p
    if (root / ".lepton" / "deployment.json").is_file():
        p.cli("deploy", "stop")
    for c in p.ours():  # whatever a failed test left behind
        c.remove(force=True)


@pytest.fixture
def project(tmp_path: Path, engine: Engine) -> Iterator[Project]:
    yield from _project(tmp_path, engine)


@pytest.fixture
def slo_project(tmp_path: Path, engine: Engine) -> Iterator[Project]:
    yield from _project(tmp_path, engine, extra=SLO)


def _infer(endpoint: str) -> dict[str, Any]:
    import urllib.request

    req = urllib.request.Request(
        f"{endpoint}/v2/models/{MODEL}/infer", data=PAYLOAD, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def test_first_deploy_blue_green_status_rollback_and_stop(project: Project) -> None:
    r = project.cli("run", "-p", "C=1.0")
    assert r.code == 0, r
    first = project.record()
    assert first["target"] == "docker" and first["version"] == 1 and first["status"] == "healthy", first
    assert first["endpoint"] == f"http://127.0.0.1:{project.port}"  # the router: the stable endpoint
    assert first["image"] == project.engine.image and first["state"]["model_source"] == "copy"
    assert {h["check"] for h in first["health"]} == {"live", "ready", "metadata", "smoke"}
    assert all(h["passed"] for h in first["health"])
    server = project.engine.client.containers.get(first["state"]["container"]["id"])
    assert server.status == "running"
    assert server.labels["ai.lepton.model.name"] == MODEL and server.labels["ai.lepton.model.version"] == "1"
    assert server.labels["ai.lepton.model.digest"] == first["digest"]
    assert server.labels[DEPLOYMENT] == first["state"]["deployment_id"]
    assert server.attrs["HostConfig"]["NetworkMode"] == "host"
    router = project.engine.client.containers.get(first["state"]["router"]["id"])
    assert router.labels["ai.lepton.role"] == "router" and router.status == "running"
    assert _infer(first["endpoint"])["model_version"] == "1"

    # Blue/green: v2 beside v1, traffic moves, v1's container is gone, the endpoint stays.
    r = project.cli("run", "-p", "C=0.5")
    assert r.code == 0, r
    second = project.record()
    assert second["version"] == 2 and second["status"] == "healthy" and second["endpoint"] == first["endpoint"]
    assert second["state"]["deployment_id"] == first["state"]["deployment_id"]
    assert second["state"]["router"]["id"] == first["state"]["router"]["id"]  # one router throughout
    assert second["previous"]["version"] == 1
    live = project.engine.containers(**{DEPLOYMENT: first["state"]["deployment_id"]})
    assert sorted(c.id for c in live) == sorted([second["state"]["container"]["id"], router.id])
    assert _infer(second["endpoint"])["model_version"] == "2"

    r = project.cli("deploy", "status", "--json")
    assert r.code == 0, r
    assert project.record()["status"] == "healthy"

    r = project.cli("deploy", "rollback")
    assert r.code == 0, r
    back = project.record()
    assert back["version"] == 1 and back["status"] == "healthy" and back["endpoint"] == first["endpoint"]
    assert _infer(back["endpoint"])["model_version"] == "1"
    live = project.engine.containers(**{DEPLOYMENT: first["state"]["deployment_id"]})
    assert sorted(c.id for c in live) == sorted([back["state"]["container"]["id"], router.id])
    shown = json.loads(project.cli("registry", "show", "production", "--json").out)
    assert shown["version"] == 1

    r = project.cli("deploy", "stop")
    assert r.code == 0, r
    assert project.record()["status"] == "stopped"
    assert project.engine.containers(**{DEPLOYMENT: first["state"]["deployment_id"]}) == []
    r = project.cli("deploy", "status")
    assert project.record()["status"] == "stopped", r


def test_a_name_taken_by_another_deployment_and_a_server_gone(tmp_path: Path, project: Project) -> None:
    r = project.cli("run", "-p", "C=1.0")
    assert r.code == 0, r
    rec = project.record()

    # Another project asking for the same container names: refused, its new container removed, ours untouched.
    for other in _project(tmp_path / "other", project.engine):
        config = (other.root / "lepton.yml").read_text().replace(f"name: {other.name}", f"name: {project.name}")
        (other.root / "lepton.yml").write_text(config)
        r = other.cli("run", "-p", "C=1.0")
        assert_one_line_error(r, 2, f"container name {project.name}-router is taken by another deployment")
        live = project.engine.containers(**{"ai.lepton.model.name": MODEL})
        assert sorted(c.id for c in live) == sorted([rec["state"]["container"]["id"], rec["state"]["router"]["id"]])
        assert not (other.root / ".lepton" / "deployment.json").exists()
        other.name = "unused"  # its teardown must not remove our containers
    r = project.cli("deploy", "status")
    assert r.code == 0 and project.record()["status"] == "healthy", r

    project.engine.client.containers.get(rec["state"]["container"]["id"]).remove(force=True)
    project.cli("deploy", "status")
    after = project.record()
    assert after["status"] == "down" and "gone" in after["health"][0]["detail"], after


def test_broken_version_is_rolled_back_under_load_with_zero_failed_requests(slo_project: Project) -> None:
    p = slo_project
    r = p.cli("run", "-p", "C=1.0")
    assert r.code == 0, r
    first = p.record()
    assert first["slo"]["passed"] and first["endpoint"] == f"http://127.0.0.1:{p.port}"

    with Load(first["endpoint"]) as load:
        time.sleep(1.0)
        r = p.cli("run", "-p", "broken=1")
        time.sleep(1.0)
    assert r.code == 1, r
    assert "rolled back" in r.err and "error rate" in r.err, r

    failed = p.record("deployment.failed.json")
    assert failed["version"] == 2 and failed["status"] == "failed" and failed["slo"]["passed"] is False
    breach = failed["slo"]["samples"][-1]
    assert breach["verdict"] == "breach" and breach["requests"] >= 20, breach
    assert p.engine.client.containers.list(all=True, filters={"id": failed["state"]["container"]["id"]}) == []

    current = p.record()
    assert current["version"] == 1 and current["endpoint"] == first["endpoint"]
    assert p.engine.client.containers.get(first["state"]["container"]["id"]).status == "running"
    shown = json.loads(p.cli("registry", "show", "production", "--json").out)
    assert shown["version"] == 1

    assert load.result is not None
    statuses = load.result.statuses()
    failures = [s for s in load.result.samples if s.status != 200][:5]
    assert not failures, (statuses, failures)
    assert statuses.get(200, 0) >= 50, statuses


def test_an_image_that_does_not_exist_fails_in_one_line_and_deploys_nothing(tmp_path: Path, engine: Engine) -> None:
    missing = engine.image.split("@")[0] + "@sha256:" + "0" * 64
    for p in _project(tmp_path, engine, image=missing):
        r = p.cli("run", "-p", "C=1.0")
        assert_one_line_error(r, 2, "does not exist", missing)
        assert not (p.root / ".lepton" / "deployment.json").exists()
        assert p.ours() == []


@pytest.mark.parametrize(
    "host, needle",
    [
        ("unix:///nonexistent/docker.sock", "cannot reach the Docker host unix:///nonexistent/docker.sock"),
        ("ssh://nobody@127.0.0.1:1", "cannot reach the Docker host ssh://nobody@127.0.0.1:1"),
    ],
)
def test_an_unreachable_docker_host_fails_in_one_line(project: Project, host: str, needle: str) -> None:
    require("paramiko")
    r = project.cli("run", "-p", "C=1.0", env={"DOCKER_HOST": host})
    assert_one_line_error(r, 2, needle)
    assert not (project.root / ".lepton" / "deployment.json").exists()
    assert project.ours() == []
