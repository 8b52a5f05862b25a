"""The kubernetes target's manifests: every rendered document checked against the real Kubernetes schemas
(kubernetes-validate, strict: an unknown or misspelled field fails) and the InferenceService against
KServe's own CRD schema (../shared/schemas/), for the default settings and for every option that changes
the output (GPUs, KServe, canary, pull secrets, a service account, resources)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from lepton_ci.deploy import manifests
from lepton_ci.deploy.base import DeploySpec, k8s_name, pinned_image
from lepton_ci.errors import UserError
from lepton_ci.records import ModelVersion
from tests.e2e.helpers import require
from tests.support.shared_schemas import shared_schema

ROOT = Path(__file__).resolve().parents[2]
# KServe's InferenceService CRD (2 MB, Apache-2.0; see ../shared/schemas/README.md), or LEPTON_KSERVE_CRD.
KSERVE_CRD = Path(
    os.environ.get("LEPTON_KSERVE_CRD")
    or shared_schema("kserve-inferenceservice-crd.yaml")
    or ROOT.parent / "shared" / "schemas" / "kserve-inferenceservice-crd.yaml"
)
DIGEST = "sha256:" + "ab" * 32
IMAGE = "registry.example.com/team/digits-serve@" + "sha256:" + "cd" * 32
K8S_VERSION = "1.33.0"  # a currently supported minor; kubernetes-validate ships its schemas

OPTION_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "gpu": {"gpus": 1, "resources": {"requests": {"cpu": 2, "memory": "8Gi"}, "limits": {"memory": "16Gi"}}},
    "full": {
        "name": "digits-prod",
        "namespace": "ml-serving",
        "min_replicas": 3,
        "max_replicas": 10,
        "target_cpu_utilization": 60,
        "max_unavailable": 0,
        "service_type": "LoadBalancer",
        "service_account": "model-server",
        "image_pull_secrets": ["ghcr"],
        "run_as_user": 1000,
    },
    "kserve": {"kserve": True},
    "kserve-canary": {"kserve": True, "canary_traffic_percent": 10, "gpus": 2, "image_pull_secrets": ["ghcr"],
                      "service_account": "model-server"},
}


def spec(model: str = "digits", **kubernetes: Any) -> DeploySpec:
    mv = ModelVersion(name=model, version=7, digest=DIGEST)
    return DeploySpec(version=mv, model_dir=None, model_file="model.joblib", framework="sklearn",
                      options={"target": "kubernetes", "kubernetes": kubernetes}, state_dir=Path("/nonexistent"))


@functools.cache
def kserve_validator() -> Any:
    """KServe's InferenceService schema (the CRD's openAPIV3Schema for v1beta1), built once: it is large."""
    import jsonschema

    if not KSERVE_CRD.is_file():
        msg = f"KServe's CRD is missing at {KSERVE_CRD} (set LEPTON_KSERVE_CRD)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    crd = yaml.safe_load(KSERVE_CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    return jsonschema.Draft7Validator(version["schema"]["openAPIV3Schema"])


@pytest.mark.parametrize("name", list(OPTION_SETS))
def test_every_manifest_validates_strictly(name: str) -> None:
    kv = require("kubernetes_validate")
    docs = manifests.render(spec(**OPTION_SETS[name]), IMAGE)
    kinds = [m.kind for m in docs]
    if OPTION_SETS[name].get("kserve"):
        assert kinds == ["InferenceService", "PodDisruptionBudget"]
    else:
        assert kinds == ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
    for m in docs:
        assert yaml.safe_load(m.text) == m.obj  # the file holds exactly the object
        if m.kind == "InferenceService":
            # KServe's CRD schema; kubernetes-validate does not know CRDs
            kserve_validator().validate(m.obj)
        else:
            kv.validate(m.obj, K8S_VERSION, strict=True)


def test_strict_validation_catches_a_misspelled_field() -> None:
    """The check is worth something: strict mode refuses an unknown field, and the CRD schema a wrong type."""
    kv = require("kubernetes_validate")
    import jsonschema

    dep = manifests.render(spec(), IMAGE)[0].obj
    dep["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(dep, K8S_VERSION, strict=True)
    isvc = manifests.render(spec(kserve=True, canary_traffic_percent=5), IMAGE)[0].obj
    isvc["spec"]["predictor"]["canaryTrafficPercent"] = "ten"
    with pytest.raises(jsonschema.ValidationError):
        kserve_validator().validate(isvc)


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "InferenceService":
        return obj["spec"]["predictor"]["containers"][0]
    return obj["spec"]["template"]["spec"]["containers"][0]


def test_deployment_content() -> None:
    dep, svc, hpa, pdb = (m.obj for m in manifests.render(spec(gpus=1), IMAGE))
    c = _container(dep)
    assert c["image"] == IMAGE
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and c["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert c["resources"]["requests"]["cpu"] == "250m"
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    pod = dep["spec"]["template"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True and pod["spec"]["securityContext"]["runAsUser"] > 0
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8080"
    labels = pod["metadata"]["labels"]
    assert labels["lepton-ci/model"] == "digits" and labels["lepton-ci/model-version"] == "7"
    assert labels["lepton-ci/model-digest"] == "ab" * 8
    assert pod["metadata"]["annotations"]["lepton-ci/model-digest"] == DIGEST
    # the selector is immutable: only stable labels, and every object selects the same pods
    selector = dep["spec"]["selector"]["matchLabels"]
    assert "app.kubernetes.io/version" not in selector and "lepton-ci/model-version" not in selector
    assert svc["spec"]["selector"] == selector == pdb["spec"]["selector"]["matchLabels"]
    assert all(labels[k] == v for k, v in selector.items())
    assert "replicas" not in dep["spec"]  # the autoscaler owns the count
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "digits"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert svc["spec"]["ports"][0]["port"] == 8080


def test_kserve_content() -> None:
    isvc, pdb = (m.obj for m in manifests.render(spec(kserve=True, canary_traffic_percent=20), IMAGE))
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    pred = isvc["spec"]["predictor"]
    assert pred["canaryTrafficPercent"] == 20
    c = pred["containers"][0]
    assert c["image"] == IMAGE and {"name": "PROTOCOL", "value": "v2"} in c["env"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert pdb["spec"]["selector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": "digits"}
    no_canary = manifests.render(spec(kserve=True), IMAGE)[0].obj
    assert "canaryTrafficPercent" not in no_canary["spec"]["predictor"]


def test_values_cannot_break_the_yaml() -> None:
    """Everything goes through tojson: a hostile-looking name or label stays one string value."""
    s = spec("odd.name_v2")
    s.labels = {"team": "a: b\n- c"}
    dep = manifests.render(s, IMAGE)[0].obj
    assert dep["metadata"]["name"] == "odd-name-v2"
    assert dep["metadata"]["labels"]["team"] == "a: b\n- c"


@pytest.mark.parametrize("model,expected", [("digits", "digits"), ("9lives", "m-9lives"), ("A.B_c", "a-b-c"),
                                            ("x" * 80, "x" * 52)])
def test_object_names(model: str, expected: str) -> None:
    assert manifests.settings(spec(model))["name"] == expected
    assert k8s_name(model, 52) == expected


def test_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(UserError, match="max_replicas"):
        manifests.settings(spec(min_replicas=4, max_replicas=2))
    s = spec()
    with pytest.raises(UserError, match="deploy.image"):
        pinned_image(s)
    s.options["image"] = "ghcr.io/team/digits:latest"
    with pytest.raises(UserError, match="pinned by digest"):
        pinned_image(s)
    s.options["image"] = IMAGE + "\n"
    with pytest.raises(UserError, match="pinned by digest"):
        pinned_image(s)
    s.image = IMAGE  # the build step's image wins over deploy.image
    assert pinned_image(s) == IMAGE


def test_write_replaces_files_of_the_other_mode(tmp_path: Path) -> None:
    manifests.write(manifests.render(spec(), IMAGE), tmp_path)
    (tmp_path / "kustomization.yaml").write_text("resources: []\n")
    manifests.write(manifests.render(spec(kserve=True), IMAGE), tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["inferenceservice.yaml", "kustomization.yaml", "pdb.yaml"]


def test_templates_ship_with_the_package() -> None:
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert "templates/kubernetes/*.j2" in cfg["options.package_data"]["lepton_ci"]
    assert {p.name for p in manifests.TEMPLATES.glob("*.j2")} == {
        f"{n}.yaml.j2" for n in ("deployment", "service", "hpa", "pdb", "inferenceservice")}


def test_image_targets_drop_the_private_model_copy(tmp_path: Path) -> None:
    """The deploy step copies the verified files for every target; one that runs an image never reads them."""
    from lepton_ci.deploy.base import discard_model_copy

    s = spec()
    s.model_dir, s.private_copy = tmp_path / "copy", True
    s.model_dir.mkdir()
    (s.model_dir / "model.bin").write_bytes(b"x")
    discard_model_copy(s)
    assert not s.model_dir.exists()
    s.model_dir, s.private_copy = tmp_path, False  # not a copy: left alone
    discard_model_copy(s)
    assert tmp_path.is_dir()
