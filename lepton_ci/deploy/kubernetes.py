"""Kubernetes deploy target: the serving image as a Deployment (or a KServe InferenceService), with kubectl.

Two ways out. With `deploy.kubernetes.render_only` the manifests are written to a directory for a GitOps
tool (Argo CD, Flux) to sync, and the record says "rendered": nothing here talks to a cluster. Otherwise
they are applied with the user's own kubectl and kubeconfig (KUBECONFIG), to the context named in
`deploy.kubernetes.context` only: a CI job must never deploy to whatever context happens to be current.

Nothing is half-applied on bad input: the context is checked first (`kubectl config get-contexts NAME`),
then the API server validates every manifest in a server-side dry run, and only then are they applied.
A rollout that does not become ready within `rollout_timeout` is reverted to the previous version's
manifests (or `kubectl rollout undo` when they are gone) and the deploy fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, NoReturn

from lepton_ci.deploy import manifests
from lepton_ci.deploy.base import DeployFailed, DeploySpec, discard_model_copy, pinned_image, previous_summary
from lepton_ci.errors import TransientError, UserError
from lepton_ci.records import Deployment
from lepton_ci.timeutil import utcnow

KUBECTL_TIMEOUT_S = 120.0
# kubectl's words for "the cluster could not be reached", as opposed to "the cluster said no".
_UNREACHABLE = ("Unable to connect", "connection refused", "i/o timeout", "no such host", "dial tcp", "TLS handshake")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


class Kubectl:
    """kubectl pinned to one context and namespace. Errors become one-line lepton-ci errors."""

    def __init__(self, context: str, namespace: str) -> None:
        found = shutil.which("kubectl")
        if found is None:
            raise UserError("kubectl is not on PATH: install it, or set deploy.kubernetes.render_only")
        self.binary = found
        self.context = context
        self.namespace = namespace

    @staticmethod
    def kubeconfig() -> str:
        return os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")

    def run(self, *args: str, timeout: float = KUBECTL_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        cmd = [self.binary, "--context", self.context, "--namespace", self.namespace, *args]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise TransientError(f"kubectl {args[0]} did not finish within {timeout:g}s") from None

    def check_context(self) -> None:
        """The context must exist in the kubeconfig, before anything is sent anywhere."""
        proc = subprocess.run(
            [self.binary, "config", "get-contexts", self.context, "--no-headers"],
            capture_output=True,
            text=True,
            timeout=KUBECTL_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise UserError(
                f"kube context {self.context!r} (deploy.kubernetes.context) is not in {self.kubeconfig()}: "
                f"{_last_line(proc.stderr)}"
            )

    def checked(self, *args: str, what: str, timeout: float = KUBECTL_TIMEOUT_S) -> str:
        proc = self.run(*args, timeout=timeout)
        if proc.returncode != 0:
            detail = _last_line(proc.stderr or proc.stdout)
            kind = TransientError if any(w in detail for w in _UNREACHABLE) else UserError
            raise kind(f"{what} failed (context {self.context!r}): {detail}")
        return proc.stdout

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The object as JSON, or None when the cluster says it does not exist."""
        proc = self.run("get", kind, name, "-o", "json")
        if proc.returncode != 0:
            if "NotFound" in proc.stderr or "not found" in proc.stderr:
                return None
            detail = _last_line(proc.stderr)
            kind_ = TransientError if any(w in detail for w in _UNREACHABLE) else UserError
            raise kind_(f"kubectl get {kind} {name} failed (context {self.context!r}): {detail}")
        try:
            obj = json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise TransientError(f"kubectl get {kind} {name} printed something other than JSON") from None
        return obj if isinstance(obj, dict) else None


def _render_dir(s: dict[str, Any]) -> Path | None:
    """Where render-only writes, or None to apply. The deploy step makes the value an absolute path."""
    value = s["render_only"]
    if value is True:
        raise UserError("deploy.kubernetes.render_only: true needs a directory (the deploy step sets one)")
    return Path(value) if isinstance(value, str) and value else None


def _endpoint(s: dict[str, Any]) -> str:
    """The in-cluster URL (KServe serves an InferenceService under its own name, on port 80)."""
    host = f"{s['name']}.{s['namespace']}.svc.cluster.local"
    return f"http://{host}" if s["kserve"] else f"http://{host}:{manifests.SERVER_PORT}"


def _workload(s: dict[str, Any]) -> tuple[str, str]:
    return ("inferenceservice", s["name"]) if s["kserve"] else ("deployment", s["name"])


class KubernetesTarget:
    name = "kubernetes"

    def deploy(self, spec: DeploySpec, current: Deployment | None) -> Deployment:
        try:
            return self._deploy(spec, current)
        finally:
            discard_model_copy(spec)

    def _deploy(self, spec: DeploySpec, current: Deployment | None) -> Deployment:
        image = pinned_image(spec)
        s = manifests.settings(spec)
        docs = manifests.render(spec, image)
        record = Deployment(
            target=self.name,
            model=spec.version.name,
            version=spec.version.version,
            digest=spec.version.digest,
            endpoint=_endpoint(s),
            image=image,
            created=utcnow(),
            previous=previous_summary(current),
            state={"name": s["name"], "namespace": s["namespace"], "kserve": s["kserve"]},
        )
        out_dir = _render_dir(s)
        if out_dir is not None:
            paths = manifests.write(docs, out_dir)
            record.status = "rendered"
            record.state.update(manifest_dir=str(out_dir), manifests=[p.name for p in paths])
            record.health = [{"check": "render", "passed": True, "detail": f"{len(paths)} manifests in {out_dir}"}]
            return record

        if not s["context"]:
            raise UserError(
                "deploy.kubernetes.context is not set: name the kube context to deploy to, or set "
                "deploy.kubernetes.render_only to write the manifests for GitOps"
            )
        kube = Kubectl(s["context"], s["namespace"])
        kube.check_context()
        work = spec.state_dir / "kubernetes" / f"{s['name']}-v{spec.version.version}"
        manifests.write(docs, work)
        record.state.update(context=s["context"], manifest_dir=str(work), manifests=[m.filename for m in docs])
        # The API server validates everything (schemas, admission, quotas) before anything changes.
        kube.checked("apply", "--dry-run=server", "-f", str(work), what="kubectl apply --dry-run=server")
        applied = kube.run("apply", "-f", str(work))
        if applied.returncode != 0:
            self._failed(kube, s, record, current, f"kubectl apply failed: {_last_line(applied.stderr)}")
        ok, detail = self._wait(kube, s)
        record.health = [{"check": "rollout", "passed": ok, "detail": detail}]
        if not ok:
            self._failed(kube, s, record, current, f"the rollout did not become ready: {detail}")
        record.status = "healthy"
        return record

    def _wait(self, kube: Kubectl, s: dict[str, Any]) -> tuple[bool, str]:
        timeout = s["rollout_timeout"]
        kind, name = _workload(s)
        if s["kserve"]:
            args = ["wait", "--for=condition=Ready", f"{kind}/{name}", f"--timeout={timeout:g}s"]
        else:
            args = ["rollout", "status", f"{kind}/{name}", f"--timeout={timeout:g}s"]
        proc = kube.run(*args, timeout=timeout + 30)
        return proc.returncode == 0, _last_line(proc.stdout if proc.returncode == 0 else proc.stderr or proc.stdout)

    def _failed(
        self, kube: Kubectl, s: dict[str, Any], record: Deployment, current: Deployment | None, why: str
    ) -> NoReturn:
        """Put the previous version back, then raise: its manifests when they are still here (they hold the
        whole previous state), else `kubectl rollout undo` on a plain Deployment."""
        record.status = "failed"
        message = f"deploy of {record.model} v{record.version} to {s['context']}: {why}"
        if current is None or current.target != self.name or current.status != "healthy":
            raise DeployFailed(message, record)
        if current.state.get("name") != s["name"] or current.state.get("namespace") != s["namespace"]:
            raise DeployFailed(message, record)
        previous_dir = Path(str(current.state.get("manifest_dir") or "")) if current.state.get("manifest_dir") else None
        if previous_dir is not None and previous_dir.is_dir():
            back = kube.run("apply", "-f", str(previous_dir))
            how = "its manifests were applied again"
        elif not s["kserve"]:
            back = kube.run("rollout", "undo", f"deployment/{s['name']}")
            how = "kubectl rollout undo"
        else:
            raise DeployFailed(f"{message}; v{current.version}'s manifests are gone, so it was not put back", record)
        if back.returncode == 0:
            raise DeployFailed(f"{message}; v{current.version} was put back ({how})", record)
        raise DeployFailed(f"{message}; v{current.version} could NOT be put back: {_last_line(back.stderr)}", record)

    def _kubectl_for(self, deployment: Deployment) -> Kubectl:
        st = deployment.state
        if not st.get("context") or not st.get("name"):
            raise UserError("the recorded kubernetes deployment has no context or name (was it rendered only?)")
        kube = Kubectl(str(st["context"]), str(st.get("namespace", "default")))
        kube.check_context()
        return kube

    def status(self, deployment: Deployment) -> Deployment:
        if deployment.status in ("rendered", "stopped"):
            return deployment  # rendered: the GitOps tool owns the cluster state, not this record
        kube = self._kubectl_for(deployment)
        name, kserve = str(deployment.state["name"]), bool(deployment.state.get("kserve"))
        obj = kube.get("inferenceservice" if kserve else "deployment", name)
        if obj is None:
            deployment.status = "down"
            deployment.health = [{"check": "exists", "passed": False, "detail": f"{name} is not in the cluster"}]
            return deployment
        conditions = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}
        want = "Ready" if kserve else "Available"
        cond = conditions.get(want) or {}
        ok = cond.get("status") == "True"
        detail = cond.get("message") or cond.get("reason") or f"no {want} condition yet"
        if not kserve:
            st = obj.get("status") or {}
            detail = f"{st.get('readyReplicas', 0)}/{st.get('replicas', 0)} replicas ready; {detail}"
        deployment.health = [{"check": want.lower(), "passed": ok, "detail": detail}]
        deployment.status = "healthy" if ok else "unhealthy"
        return deployment

    def stop(self, deployment: Deployment) -> Deployment:
        if deployment.status == "rendered":
            raise UserError(
                "these manifests were rendered for GitOps: remove them from the repository your GitOps tool syncs"
            )
        kube = self._kubectl_for(deployment)
        name = str(deployment.state["name"])
        kinds = (
            ["inferenceservice.serving.kserve.io", "poddisruptionbudget.policy"]
            if deployment.state.get("kserve")
            else ["deployment.apps", "service", "horizontalpodautoscaler.autoscaling", "poddisruptionbudget.policy"]
        )
        kube.checked("delete", ",".join(kinds), name, "--ignore-not-found", what="kubectl delete")
        deployment.status = "stopped"
        deployment.health = []
        return deployment
