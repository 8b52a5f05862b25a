"""The GPU runner manifests of docs/runners/ validate against Kubernetes' own schemas (kubernetes-validate, strict:
a misspelled field fails), and each one asks for an NVIDIA GPU.

- GitHub's Actions Runner Controller: the scale set's Helm values and its AutoscalingRunnerSet. ARC's CRDs are
  not available offline, so the pod template each embeds (a PodTemplateSpec) is validated as the `template` of a
  core PodTemplate object, and the AutoscalingRunnerSet's other fields are checked by hand.
- GitLab's Kubernetes executor: config.toml is not a Kubernetes object, so the job pod it produces is built the
  way the executor builds it (a `build` container with the image and resource settings, the node selector and
  tolerations, the volumes) with the strategic-merge pod spec patch applied, and validated as a Pod; the Helm
  values must carry the same TOML.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.e2e.helpers import require

ROOT = Path(__file__).resolve().parents[2]
RUNNERS = ROOT / "docs" / "runners"
K8S_VERSION = "1.33.0"


def validate(obj: dict[str, Any]) -> None:
    kv = require("kubernetes_validate")
    kv.validate(obj, K8S_VERSION, strict=True)


def as_pod_template(template: dict[str, Any], name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}


def gpu_limit(pod_spec: dict[str, Any], container: str) -> int:
    (c,) = [c for c in pod_spec["containers"] if c["name"] == container]
    return int(c["resources"]["limits"]["nvidia.com/gpu"])


def test_arc_scale_set_values_pod_template_validates() -> None:
    values = yaml.safe_load((RUNNERS / "arc-gpu-values.yaml").read_text())
    assert values["runnerScaleSetName"] == "gpu" and values["minRunners"] == 0
    validate(as_pod_template(values["template"], "arc-gpu"))
    spec = values["template"]["spec"]
    assert gpu_limit(spec, "runner") == 1
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def test_arc_autoscalingrunnerset_validates_its_pod_template() -> None:
    doc = yaml.safe_load((RUNNERS / "arc-autoscalingrunnerset.yaml").read_text())
    assert (doc["apiVersion"], doc["kind"]) == ("actions.github.com/v1alpha1", "AutoscalingRunnerSet")
    known = {"githubConfigUrl", "githubConfigSecret", "runnerScaleSetName", "minRunners", "maxRunners", "template",
             "runnerGroup", "proxy", "githubServerTLS", "listenerTemplate", "listenerMetrics"}
    assert set(doc["spec"]) <= known, set(doc["spec"]) - known
    assert doc["spec"]["githubConfigUrl"].startswith("https://github.com/")
    assert 0 <= doc["spec"]["minRunners"] <= doc["spec"]["maxRunners"]
    validate(as_pod_template(doc["spec"]["template"], "arc-gpu"))
    assert gpu_limit(doc["spec"]["template"]["spec"], "runner") == 1


def strategic_merge(base: Any, patch: Any) -> Any:
    """Kubernetes' strategic merge for what pod spec patches use: maps merge, lists of named objects merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = strategic_merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(x, dict) and "name" in x for x in base + patch):
        merged = {x["name"]: x for x in base}
        for item in patch:
            merged[item["name"]] = strategic_merge(merged[item["name"]], item) if item["name"] in merged else item
        return list(merged.values())
    return copy.deepcopy(patch)


def gitlab_job_pod(config: dict[str, Any]) -> dict[str, Any]:
    """The pod the Kubernetes executor starts for a job, from the settings config.toml uses."""
    (runner,) = config["runners"]
    k = runner["kubernetes"]
    tolerations = []
    for key, effect in k.get("node_tolerations", {}).items():
        name, _, value = key.partition("=")
        tolerations.append({"key": name, "operator": "Equal" if value else "Exists", "effect": effect,
                            **({"value": value} if value else {})})
    volumes = [{"name": v["name"], "emptyDir": {"medium": v.get("medium", "")}} for v in k["volumes"]["empty_dir"]]
    mounts = [{"name": v["name"], "mountPath": v["mount_path"]} for v in k["volumes"]["empty_dir"]]
    build = {
        "name": "build",
        "image": k["image"],
        "command": ["sh", "-c", "true"],
        "resources": {"requests": {"cpu": k["cpu_request"], "memory": k["memory_request"]},
                      "limits": {"memory": k["memory_limit"]}},
        "volumeMounts": mounts,
    }
    helper = {"name": "helper", "image": "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v17.0.0",
              "volumeMounts": mounts}
    spec = {"restartPolicy": "Never", "nodeSelector": dict(k["node_selector"]), "tolerations": tolerations,
            "containers": [build, helper], "volumes": volumes}
    for patch in k.get("pod_spec", []):
        assert patch["patch_type"] == "strategic"
        spec = strategic_merge(spec, yaml.safe_load(patch["patch"]))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "runner-abc-project-1-concurrent-0",
                                                            "namespace": k["namespace"]}, "spec": spec}


def test_gitlab_kubernetes_executor_job_pod_validates() -> None:
    config = tomllib.loads((RUNNERS / "gitlab-config.toml").read_text())
    (runner,) = config["runners"]
    assert runner["executor"] == "kubernetes"
    assert runner["feature_flags"]["FF_USE_ADVANCED_POD_SPEC_CONFIGURATION"] is True, "pod_spec needs the flag"
    pod = gitlab_job_pod(config)
    validate(pod)
    assert gpu_limit(pod["spec"], "build") == 1
    assert pod["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_gitlab_helm_values_carry_the_same_config() -> None:
    values = yaml.safe_load((RUNNERS / "gitlab-runner-values.yaml").read_text())
    in_values = tomllib.loads(values["runners"]["config"])
    standalone = tomllib.loads((RUNNERS / "gitlab-config.toml").read_text())
    assert in_values["runners"] == standalone["runners"]
    assert values["runners"]["secret"] and values["rbac"]["create"] is True


def test_validation_catches_a_misspelled_field() -> None:
    values = yaml.safe_load((RUNNERS / "arc-gpu-values.yaml").read_text())
    values["template"]["spec"]["containers"][0]["resource"] = {}
    kv = require("kubernetes_validate")
    with pytest.raises(kv.ValidationError):
        validate(as_pod_template(values["template"], "arc-gpu"))
