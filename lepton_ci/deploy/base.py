"""The deploy-target seam: local processes now; Docker, Kubernetes/KServe and others slot in here.

A target turns a verified model version into a running endpoint and reports on it. It never touches
the registry or gate records: the deploy step does the blessing check, verifies the bytes and moves
aliases. The spec is target-neutral: a local directory of verified files and/or an image reference;
what a target needs to find its deployment again (a pid, a container id, a Kubernetes object) goes in
the record's target-owned `state`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from lepton_ci import plugins
from lepton_ci.errors import StepFailed
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


TARGETS: dict[str, str] = {"local": "lepton_ci.deploy.local:LocalTarget"}


def get_target(name: str) -> DeployTarget:
    target: DeployTarget = plugins.load(TARGETS, name, "deploy target", protocol=DeployTarget)()
    return target
