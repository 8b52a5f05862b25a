"""The deploy-target seam: local processes now; Docker, Kubernetes/KServe and others slot in here.

A target turns a fetched model version into a running endpoint and reports on it. It never touches
the registry or gate records: the deploy step does the blessing check and alias moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lepton_ci.errors import StepFailed, UserError
from lepton_ci.records import Deployment, ModelVersion


class DeployFailed(StepFailed):
    """The new version did not become healthy; the target has already put the old one back."""

    def __init__(self, message: str, deployment: Deployment) -> None:
        super().__init__(message)
        self.deployment = deployment


@dataclass
class DeploySpec:
    """What the deploy step hands a target."""

    version: ModelVersion
    model_dir: Path
    model_file: str
    framework: str
    options: dict[str, Any]
    state_dir: Path
    smoke_request: dict[str, Any] | None = None


class DeployTarget(Protocol):
    name: str

    def deploy(self, spec: DeploySpec, current: Deployment | None) -> Deployment: ...

    def status(self, deployment: Deployment) -> Deployment: ...

    def stop(self, deployment: Deployment) -> Deployment: ...


TARGETS = {"local": "lepton_ci.deploy.local:LocalTarget"}


def get_target(name: str) -> DeployTarget:
    if name not in TARGETS:
        raise UserError(f"unknown deploy target {name!r} (expected one of: {', '.join(TARGETS)})")
    import importlib

    module, attr = TARGETS[name].split(":")
    return getattr(importlib.import_module(module), attr)()
