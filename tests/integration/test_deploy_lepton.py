"""The lepton target against a stand-in workspace API (tests/support/lepton_standin.py) that validates every
request body with the `leptonai` package's own types: create, update (a rollout to a new image), status,
stop, a failed rollout put back, bodies the platform's types refuse, a missing and a wrong token (never
printed), and the whole path through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from lepton_ci.deploy.base import DeployFailed, DeploySpec
from lepton_ci.errors import UserError
from lepton_ci.records import ModelVersion

from tests.e2e.helpers import CONFIG, assert_one_line_error, cli, make_project, require
from tests.support.keys import PRIVATE_PEM

TOKEN = "lp-test-token-4f9c2e71"
IMAGE_1 = "ghcr.io/team/digits-serve@sha256:" + "1a" * 32
IMAGE_2 = "ghcr.io/team/digits-serve@sha256:" + "2b" * 32


@pytest.fixture(autouse=True)
def _leptonai(monkeypatch: pytest.MonkeyPatch) -> None:
    require("leptonai")
    import lepton_ci.deploy.lepton as target

    monkeypatch.setattr(target, "POLL_S", 0.01)
    monkeypatch.setenv("LEPTON_WORKSPACE_TOKEN", TOKEN)
    for var in ("LEPTON_WORKSPACE_ID", "LEPTON_WORKSPACE_URL", "LEPTON_WORKSPACE_ORIGIN_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture()
def standin():
    from tests.support.lepton_standin import lepton_standin

    with lepton_standin(TOKEN) as (url, ws):
        yield url, ws


def spec(url: str, version: int = 1, image: str = IMAGE_1, **lepton: Any) -> DeploySpec:
    mv = ModelVersion(name="digits", version=version, digest="sha256:" + f"{version:02d}" * 32)
    options = {"target": "lepton", "lepton": {"workspace": "ws-test", "url": url, "ready_timeout": 5, **lepton}}
    return DeploySpec(version=mv, model_dir=None, model_file="model.joblib", framework="sklearn", options=options,
                      state_dir=Path("/nonexistent"), image=image)


def _bodies(ws, method: str) -> list[Any]:
    return [body for m, path, body in ws.requests if m == method and "/deployments" in path]


def test_create_update_status_stop(standin) -> None:
    from lepton_ci.deploy.lepton import LeptonTarget

    url, ws = standin
    target = LeptonTarget()
    first = target.deploy(spec(url, min_replicas=1, max_replicas=3, env={"WORKERS": "2"}), None)
    assert first.status == "healthy" and first.endpoint == "https://digits-ws-test.lepton.example"
    assert first.image == IMAGE_1 and first.state["name"] == "digits"
    (created,) = _bodies(ws, "POST")
    assert created["metadata"]["name"] == "digits"
    assert created["spec"]["container"] == {"image": IMAGE_1, "ports": [{"container_port": 8080}]}
    assert created["spec"]["resource_requirement"] == {"resource_shape": "cpu.small", "min_replicas": 1,
                                                       "max_replicas": 3}
    assert {"name": "WORKERS", "value": "2"} in created["spec"]["envs"]
    assert TOKEN not in json.dumps(first.to_dict())

    # a new version rolls out by updating the same deployment; the endpoint's auth is left as it was
    second = target.deploy(spec(url, version=2, image=IMAGE_2), first)
    assert second.status == "healthy" and second.previous["version"] == 1
    (patched,) = _bodies(ws, "PATCH")
    assert patched["spec"]["container"]["image"] == IMAGE_2
    assert "allow_unauthenticated_access" not in patched["spec"] and "api_tokens" not in patched["spec"]
    assert ws.deployments["digits"]["spec"]["container"]["image"] == IMAGE_2

    assert target.status(second).status == "healthy"
    stopped = target.stop(second)
    assert stopped.status == "stopped"
    assert _bodies(ws, "PATCH")[-1] == {"spec": {"resource_requirement": {"min_replicas": 0}}}
    assert target.status(stopped).status == "stopped"


def test_failed_rollout_puts_the_previous_image_back(standin) -> None:
    from lepton_ci.deploy.lepton import LeptonTarget

    url, ws = standin
    ws.broken_images.add(IMAGE_2)
    target = LeptonTarget()
    first = target.deploy(spec(url), None)
    with pytest.raises(DeployFailed) as err:
        target.deploy(spec(url, version=2, image=IMAGE_2), first)
    assert "the platform reports Error" in err.value.message and f"previous image {IMAGE_1} was put back" in \
        err.value.message
    assert err.value.deployment.status == "failed"
    assert _bodies(ws, "PATCH")[-1]["spec"]["container"]["image"] == IMAGE_1
    assert ws.deployments["digits"]["spec"]["container"]["image"] == IMAGE_1


def test_auth_modes_on_create(standin) -> None:
    from lepton_ci.deploy.lepton import LeptonTarget

    url, ws = standin
    LeptonTarget().deploy(spec(url, public=True, name="open"), None)
    LeptonTarget().deploy(spec(url, endpoint_token_secret="digits-endpoint-token", name="closed"), None)
    open_, closed = _bodies(ws, "POST")
    assert open_["spec"]["allow_unauthenticated_access"] is True and open_["spec"]["api_tokens"] == []
    assert closed["spec"]["api_tokens"] == [{"value_from": {"token_name_ref": "digits-endpoint-token"}}]


def test_bodies_the_platform_types_refuse(standin, monkeypatch: pytest.MonkeyPatch) -> None:
    import lepton_ci.deploy.lepton as target
    from leptonai.api.v2.types.deployment import ContainerPort, LeptonContainer

    url, ws = standin
    # refused by the same types before any request is sent
    with pytest.raises(UserError, match="max_replicas"):
        target.LeptonTarget().deploy(spec(url, min_replicas=3, max_replicas=1), None)
    assert ws.requests == []

    # the stand-in itself refuses what the types refuse, and fields they do not know
    def post(body: Any) -> requests.Response:
        return requests.post(f"{url}/deployments", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)

    good = {"metadata": {"name": "x"}, "spec": {"container": {"image": IMAGE_1, "ports": [{"container_port": 8080}]}}}
    bad_port = json.loads(json.dumps(good))
    bad_port["spec"]["container"]["ports"][0]["container_port"] = 70000
    r = post(bad_port)
    assert r.status_code == 400 and "container_port" in r.json()["message"]
    unknown = json.loads(json.dumps(good))
    unknown["spec"]["replicas"] = 2
    r = post(unknown)
    assert r.status_code == 400 and "spec.replicas" in r.json()["message"]
    assert post(good).status_code == 200

    # a body that slipped past the client's own checks is refused by the platform: one line, exit 2
    real_build = target.build_body

    def unchecked(*args: Any, **kwargs: Any) -> Any:
        body = real_build(*args, **kwargs)
        body.spec.container = LeptonContainer.model_construct(
            image=IMAGE_1, ports=[ContainerPort.model_construct(container_port=0)])
        return body

    monkeypatch.setattr(target, "build_body", unchecked)
    with pytest.raises(UserError, match=r"Lepton refused creating deployment 'digits'.*container_port"):
        target.LeptonTarget().deploy(spec(url), None)
    assert "digits" not in ws.deployments


def test_missing_and_wrong_tokens(standin, monkeypatch: pytest.MonkeyPatch) -> None:
    from lepton_ci.deploy.lepton import LeptonTarget

    url, ws = standin
    monkeypatch.delenv("LEPTON_WORKSPACE_TOKEN")
    with pytest.raises(UserError, match=r"no Lepton token: set \$LEPTON_WORKSPACE_TOKEN"):
        LeptonTarget().deploy(spec(url), None)
    with pytest.raises(UserError, match=r"set \$CUSTOM_TOKEN"):
        LeptonTarget().deploy(spec(url, token_env="CUSTOM_TOKEN"), None)
    assert ws.requests == []
    monkeypatch.setenv("CUSTOM_TOKEN", "not-the-workspace-token")
    with pytest.raises(UserError) as err:
        LeptonTarget().deploy(spec(url, token_env="CUSTOM_TOKEN"), None)
    assert "Lepton refused the token in $CUSTOM_TOKEN" in str(err.value) and "not-the-workspace-token" not in \
        str(err.value)
    assert [(m, p.rsplit("/", 1)[-1]) for m, p, _ in ws.requests] == [("GET", "workspace")]
    assert not ws.deployments


def _project(root: Path, url: str) -> Path:
    deploy = {"target": "lepton", "image": IMAGE_1, "lepton": {"workspace": "ws-test", "url": url}}
    make_project(root, CONFIG + yaml.safe_dump({"deploy": deploy}, sort_keys=False))
    key = {"LEPTON_CI_SIGNING_KEY": PRIVATE_PEM}
    for step in ("train", "gate", "tag"):
        assert cli(step, cwd=root, env=key).code == 0, step
    return root


def test_through_the_cli(standin, tmp_path: Path) -> None:
    url, ws = standin
    root = _project(tmp_path / "toy", url)
    env = {"LEPTON_CI_SIGNING_KEY": PRIVATE_PEM, "LEPTON_WORKSPACE_TOKEN": TOKEN}
    r = cli("deploy", cwd=root, env=env)
    assert r.code == 0, r
    assert "toy v1 on lepton: healthy at https://toy-ws-test.lepton.example" in r.out
    assert r.err == "", r  # nothing from leptonai's own logging or warnings on the way
    record = json.loads((root / ".lepton" / "deployment.json").read_text())
    assert record["target"] == "lepton" and record["image"] == IMAGE_1
    assert TOKEN not in (root / ".lepton" / "deployment.json").read_text()
    assert json.loads(cli("registry", "show", "production", "--json", cwd=root).out)["version"] == 1
    r = cli("deploy", "status", cwd=root, env=env)
    assert r.code == 0 and "healthy" in r.out, r
    r = cli("deploy", "stop", cwd=root, env=env)
    assert r.code == 0 and "stopped" in r.out, r

    wrong = {**env, "LEPTON_WORKSPACE_TOKEN": "wrong-token-value-123"}
    r = cli("deploy", "status", cwd=root, env=wrong)
    assert r.code == 1 and "stopped" in r.out, r  # a stopped deployment is not asked again: no token needed
    r = cli("deploy", cwd=root, env=wrong)
    assert_one_line_error(r, 2, "Lepton refused the token in $LEPTON_WORKSPACE_TOKEN")
    assert "wrong-token-value-123" not in r.err + r.out


def test_unreachable_workspace_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from lepton_ci.deploy.lepton import LeptonTarget
    from lepton_ci.errors import TransientError

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr("leptonai.api.v2.client._FLAG_RESOLVE_BACKOFF_SECONDS", 0.0)
    with pytest.raises(TransientError, match="Lepton could not be reached while checking the workspace") as err:
        LeptonTarget().deploy(spec(f"http://127.0.0.1:{port}/api/v2/workspaces/ws-test"), None)
    assert "\n" not in str(err.value) and TOKEN not in str(err.value)
