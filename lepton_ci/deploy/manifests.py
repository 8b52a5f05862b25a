"""Kubernetes manifests for a model version, rendered from the jinja2 templates in templates/kubernetes/.

Kept apart from the kubernetes target so that rendering (pure: options in, documents out) can be tested
and used for GitOps without kubectl, and so the target only deals with the cluster. Every rendered
document is parsed back with a YAML loader before it is returned: a template mistake fails here, on the
CI runner, and never reaches `kubectl apply` as a half-valid file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lepton_ci.deploy.base import DeploySpec, k8s_name
from lepton_ci.errors import UserError

TEMPLATES = Path(__file__).resolve().parents[1] / "templates" / "kubernetes"
SERVER_PORT = 8080  # the port the serving image's model server listens on
DEFAULT_RESOURCES: dict[str, dict[str, Any]] = {
    "requests": {"cpu": "250m", "memory": "512Mi"},
    "limits": {"memory": "1Gi"},  # no CPU limit by default: throttling a model server only adds latency
}
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass
class Manifest:
    """One rendered document: the file it is written to, its text, and the object it describes."""

    filename: str
    text: str
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind"))


def settings(spec: DeploySpec) -> dict[str, Any]:
    """`deploy.kubernetes` with defaults filled in, checked where the schema cannot (cross-field rules)."""
    k = dict(spec.options.get("kubernetes") or {})
    name = k.get("name") or k8s_name(spec.version.name, limit=52)  # room for KServe's "-predictor" suffix
    min_r, max_r = int(k.get("min_replicas", 2)), int(k.get("max_replicas", 5))
    if max_r < min_r:
        raise UserError(f"deploy.kubernetes.max_replicas ({max_r}) is below deploy.kubernetes.min_replicas ({min_r})")
    return {
        "name": name,
        "namespace": k.get("namespace", "default"),
        "context": k.get("context"),
        "render_only": k.get("render_only", False),
        "rollout_timeout": float(k.get("rollout_timeout", 300)),
        "min_replicas": min_r,
        "max_replicas": max_r,
        "target_cpu_utilization": int(k.get("target_cpu_utilization", 70)),
        "max_unavailable": int(k.get("max_unavailable", 1)),
        "resources": _resources(k.get("resources"), int(k.get("gpus", 0))),
        "service_type": k.get("service_type", "ClusterIP"),
        "service_account": k.get("service_account"),
        "image_pull_secrets": [{"name": s} for s in k.get("image_pull_secrets") or []],
        "run_as_user": int(k.get("run_as_user", 10001)),
        "kserve": bool(k.get("kserve", False)),
        "canary_traffic_percent": k.get("canary_traffic_percent"),
    }


def _resources(configured: dict[str, Any] | None, gpus: int) -> dict[str, dict[str, Any]]:
    """Requests and limits: the defaults, overridden key by key; GPUs are an extended resource, which
    Kubernetes only accepts with requests equal to limits."""
    out = {kind: dict(DEFAULT_RESOURCES.get(kind, {})) for kind in ("requests", "limits")}
    for kind, values in (configured or {}).items():
        out[kind].update(values or {})
    if gpus:
        out["requests"][GPU_RESOURCE] = gpus
        out["limits"][GPU_RESOURCE] = gpus
    return {kind: vals for kind, vals in out.items() if vals}


def _context(spec: DeploySpec, image: str, s: dict[str, Any]) -> dict[str, Any]:
    mv = spec.version
    digest_hex = mv.digest.split(":")[-1]
    selector = {"app.kubernetes.io/name": s["name"], "app.kubernetes.io/instance": s["name"]}
    labels = {
        **selector,
        "app.kubernetes.io/version": f"v{mv.version}",
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/managed-by": "lepton-ci",
        "lepton-ci/model": k8s_name(mv.name),
        "lepton-ci/model-version": str(mv.version),
        "lepton-ci/model-digest": digest_hex[:16],  # a label value holds 63 characters: the full one is annotated
        **{k: v for k, v in spec.labels.items() if isinstance(v, str)},
    }
    annotations = {"lepton-ci/model-name": mv.name, "lepton-ci/model-digest": mv.digest, "lepton-ci/image": image}
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": str(SERVER_PORT), "prometheus.io/path": "/metrics"}
    return {
        **s,
        "image": image,
        "port": SERVER_PORT,
        "selector": selector,
        "pdb_selector": {"serving.kserve.io/inferenceservice": s["name"]} if s["kserve"] else selector,
        "labels": labels,
        "annotations": annotations,
        "pod_annotations": {**annotations, **scrape},
        "isvc_annotations": {**annotations, "serving.kserve.io/enable-prometheus-scraping": "true"},
    }


def render(spec: DeploySpec, image: str) -> list[Manifest]:
    """The manifests for this version, in apply order. With `kserve`, KServe owns the workload (its own
    Deployment, Service and autoscaler), so only the InferenceService and the disruption budget are made."""
    import jinja2
    import yaml

    s = settings(spec)
    ctx = _context(spec, image, s)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        undefined=jinja2.StrictUndefined,
    )
    names = ["inferenceservice", "pdb"] if s["kserve"] else ["deployment", "service", "hpa", "pdb"]
    out = []
    for name in names:
        text = env.get_template(f"{name}.yaml.j2").render(**ctx)
        obj = yaml.safe_load(text)
        if not isinstance(obj, dict) or "kind" not in obj:
            raise UserError(f"templates/kubernetes/{name}.yaml.j2 did not render a Kubernetes object")
        out.append(Manifest(f"{name}.yaml", text, obj))
    return out


KNOWN_FILES = frozenset(f"{n}.yaml" for n in ("deployment", "service", "hpa", "pdb", "inferenceservice"))


def write(manifests: list[Manifest], directory: Path) -> list[Path]:
    """Write each manifest to its own file in `directory` (created), each atomically. A file lepton-ci
    writes in another mode is removed, so a GitOps tool syncing the directory never applies both a plain
    Deployment and an InferenceService; other files there are left alone."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in KNOWN_FILES - {m.filename for m in manifests}:  # e.g. deployment.yaml after kserve was turned on
        (directory / stale).unlink(missing_ok=True)
    paths = []
    for m in manifests:
        path = directory / m.filename
        tmp = path.with_name(f".{m.filename}.tmp")
        tmp.write_text(m.text, encoding="utf-8")
        tmp.replace(path)
        paths.append(path)
    return paths
