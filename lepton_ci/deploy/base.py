"""The deploy-target seam: local processes now; Docker, Kubernetes/KServe and others slot in here.

A target turns a verified model version into a running endpoint and reports on it. It never touches
the registry or gate records: the deploy step does the blessing check, verifies the bytes and moves
aliases. The spec is target-neutral: a local directory of verified files and/or an image reference;
what a target needs to find its deployment again (a pid, a container id, a Kubernetes object) goes in
the record's target-owned `state`.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from lepton_ci import plugins
from lepton_ci.errors import StepFailed, UserError
from lepton_ci.records import Deployment, ModelVersion


class DeployFailed(StepFailed):
    """The new version did not become healthy; the target has already put the old one back."""

    def __init__(self, message: str, deployment: Deployment) -> None:
        super().__init__(message)
        self.deployment = deployment


@dataclass
class DeploySpec:
    """What the deploy step hands a target. `model_dir` holds files verified against the blessing just
    before the call; `image` is a built serving image (digest-pinned) for targets that run images."""

    version: ModelVersion
    model_dir: Path | None
    model_file: str
    framework: str
    options: dict[str, Any]
    state_dir: Path
    smoke_request: dict[str, Any] | None = None
    image: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    private_copy: bool = False  # model_dir is a copy made for this deploy: the target deletes it when done


COPY_PREFIX = "lepton-serve-"  # private copies live in the system temp dir under this prefix


@runtime_checkable
class DeployTarget(Protocol):
    name: str

    def deploy(self, spec: DeploySpec, current: Deployment | None) -> Deployment: ...

    def status(self, deployment: Deployment) -> Deployment: ...

    def stop(self, deployment: Deployment) -> Deployment: ...


TARGETS: dict[str, str] = {
    "local": "lepton_ci.deploy.local:LocalTarget",
    "kubernetes": "lepton_ci.deploy.kubernetes:KubernetesTarget",
    "lepton": "lepton_ci.deploy.lepton:LeptonTarget",
    "docker": "lepton_ci.deploy.docker:DockerTarget",
}


def get_target(name: str) -> DeployTarget:
    target: DeployTarget = plugins.load(TARGETS, name, "deploy target", protocol=DeployTarget)()
    return target


# NAME[:TAG]@sha256:<64 hex>: a reference that names exactly one image, whatever a tag points at later.
PINNED_IMAGE_RE = re.compile(r"[^\s@]+@sha256:[0-9a-f]{64}")


def pinned_image(spec: DeploySpec) -> str:
    """The serving image an image-based target runs: the build step's (`spec.image`), else `deploy.image`.

    Only a digest-pinned reference is accepted: a tag can be moved after the gate blessed the model,
    and the cluster would then pull bytes nobody checked."""
    image = spec.image or spec.options.get("image")
    if not image:
        raise UserError("no serving image to deploy: set deploy.image to NAME@sha256:DIGEST (or run `build` first)")
    if not isinstance(image, str) or not PINNED_IMAGE_RE.fullmatch(image):
        raise UserError(f"deploy.image must be pinned by digest (NAME@sha256:<64 hex>), got {str(image)[:120]!r}")
    return image


def discard_model_copy(spec: DeploySpec) -> None:
    """Image-based targets never read `spec.model_dir` (the model is inside the image): drop the private
    copy the deploy step made for them, as the DeploySpec contract asks of the target."""
    if spec.private_copy and spec.model_dir is not None:
        shutil.rmtree(spec.model_dir, ignore_errors=True)


def k8s_name(model: str, limit: int = 63) -> str:
    """A model name made a DNS-1035 label (what Service and Lepton names must be): lower case letters,
    digits and '-', starting with a letter, at most `limit` characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = "m-" + name
    return name[:limit].rstrip("-")


def previous_summary(d: Deployment | None) -> dict[str, Any] | None:
    """What a new deployment record keeps of the one it replaces (rollback reads `version` from it)."""
    if d is None:
        return None
    return {"version": d.version, "digest": d.digest, "endpoint": d.endpoint, "status": d.status, "created": d.created}
