"""Docker deploy target: the serving image as a container on a Docker host, blue/green behind a router.

The host is the engine `deploy.docker.engine` or DOCKER_HOST names (a local socket, `tcp://`, `ssh://`).
A deploy starts the new version's container beside the old one (host network, a free port the server
picks and reports in a file the target reads back), runs the same ready/live/metadata/smoke checks as
the local target, and only then moves the router (a container too, see docker_router.py: the stable
endpoint) to it; with `deploy.slo` the new container is first the router's canary for the SLO watch,
and a breach puts the old one back. The old container is removed only after traffic left it, so a
failed rollout leaves the old version serving, untouched.

The model: an image built by `lepton-ci build` carries it (label `ai.lepton.model.digest`, which must be
the version's digest, or the deploy is refused; and since a label is only a claim, the model files are
read back from the created container and must be the version's, byte for byte, before it starts); a plain
serving image (lepton-ci and the framework, no
model) gets the verified files copied into the container before it starts. Every container carries the
model's name, version and digest and the deployment's id as labels, so status and stop find them again
from deployment.json, and stop removes everything of the deployment, strays of a crashed deploy included.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from lepton_ci import v2client
from lepton_ci.deploy import docker_engine, docker_router, slo
from lepton_ci.deploy.base import (
    DeployFailed,
    DeploySpec,
    discard_model_copy,
    k8s_name,
    pinned_image,
    previous_summary,
)
from lepton_ci.deploy.local import server_args
from lepton_ci.errors import TrustError, UserError
from lepton_ci.records import Deployment
from lepton_ci.timeutil import utcnow

LABEL_NAME = "ai.lepton.model.name"
LABEL_VERSION = "ai.lepton.model.version"
LABEL_DIGEST = "ai.lepton.model.digest"
LABEL_DEPLOYMENT = "ai.lepton.deployment"
LABEL_ROLE = "ai.lepton.role"
IMAGE_MODEL_DIR = "/opt/lepton/model"  # where `lepton-ci build` puts the model files (lepton_ci/build/context.py)
COPIED_MODEL_DIR = "/lepton-model"  # where this target copies them into a plain serving image
PORT_FILE = "/tmp/lepton-server.port"
STOP_GRACE_S = 10.0
_GPUS = re.compile(r"all|[0-9]+")


def settings(spec: DeploySpec) -> dict[str, Any]:
    """`deploy.docker` with defaults (the config schema has checked the types)."""
    d = dict(spec.options.get("docker") or {})
    if d.get("network", "host") != "host":
        raise UserError("deploy.docker.network: only `host` is supported (the router reaches the servers on it)")
    gpus = d.get("gpus")
    if gpus is not None and not _GPUS.fullmatch(str(gpus)):
        raise UserError(f"deploy.docker.gpus must be a number or `all`, got {str(gpus)[:40]!r}")
    if d.get("router") is False and spec.options.get("slo"):
        raise UserError("deploy.slo needs the router: remove deploy.docker.router: false")
    return {
        "engine": docker_engine.engine_url(d),
        "address": d.get("address"),
        "port": int(d.get("port", 8080)),
        "name": d.get("name") or f"lepton-{k8s_name(spec.version.name, 40)}",
        "env": {str(k): str(v) for k, v in (d.get("env") or {}).items()},
        "gpus": gpus,
        "memory": d.get("memory"),
        "router": d.get("router", True),
    }


def _address(s: dict[str, Any]) -> str:
    """Where the servers and the router listen on the Docker host, and where this machine reaches them:
    `deploy.docker.address`, else the engine's host name for a tcp:// or ssh:// engine, else loopback."""
    if s["address"]:
        return str(s["address"])
    m = re.match(r"(?:tcp|ssh|https?)://(?:[^@/]*@)?(\[[^\]]+\]|[^:/]+)", s["engine"])
    return m.group(1).strip("[]") if m else "127.0.0.1"


def _model_source(image: Any, spec: DeploySpec) -> str:
    """ "image" when the image carries exactly this version's model, "copy" when it carries none."""
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    digest = labels.get(LABEL_DIGEST)
    if digest is None:
        if spec.model_dir is None:
            raise UserError("the image holds no model and no verified model files were given to copy into it")
        return "copy"
    if digest != spec.version.digest:
        raise TrustError(
            f"refusing to deploy {spec.version.name} v{spec.version.version}: the image holds model "
            f"{labels.get(LABEL_NAME)} v{labels.get(LABEL_VERSION)} ({digest[:19]}), not this version"
        )
    return "image"


def _check(spec: DeploySpec, base: str) -> list[dict[str, Any]]:
    """The local target's checks after ready: metadata, then a smoke inference."""
    from lepton_ci.deploy.local import LocalTarget

    host, port = base.removeprefix("http://").rsplit(":", 1)
    return LocalTarget()._checks(spec, {"host": host, "port": int(port)})


class DockerTarget:
    name = "docker"

    def deploy(self, spec: DeploySpec, current: Deployment | None) -> Deployment:
        try:
            return self._deploy(spec, current)
        finally:
            discard_model_copy(spec)

    def _deploy(self, spec: DeploySpec, current: Deployment | None) -> Deployment:
        image_ref = pinned_image(spec)
        s = settings(spec)
        guard = slo.settings(spec.options)
        client = docker_engine.connect(s["engine"])
        image = docker_engine.resolve_image(client, image_ref, s["engine"])
        source = _model_source(image, spec)
        ours = current if current is not None and current.target == self.name else None
        deployment_id = str((ours.state if ours else {}).get("deployment_id") or secrets.token_hex(6))
        labels = {
            LABEL_NAME: spec.version.name,
            LABEL_VERSION: str(spec.version.version),
            LABEL_DIGEST: spec.version.digest,
            LABEL_DEPLOYMENT: deployment_id,
        }
        if s["router"]:  # before anything starts: the router's name must be free or this deployment's
            docker_router.check_name(client, f"{s['name']}-router", deployment_id)
        running = self._running(client, ours)
        address = _address(s)
        server, health = self._start(client, spec, s, image_ref, source, labels, address)
        record = Deployment(
            target=self.name,
            model=spec.version.name,
            version=spec.version.version,
            digest=spec.version.digest,
            endpoint=f"http://{address}:{server.get('port', 0)}",
            image=image_ref,
            status="healthy" if all(h["passed"] for h in health) else "failed",
            health=health,
            created=utcnow(),
            previous=previous_summary(current),
            slo=None,
            state={
                "deployment_id": deployment_id,
                "engine": s["engine"],
                "address": address,
                "model_source": source,
                "container": server,
                "server_endpoint": f"http://{address}:{server.get('port', 0)}",
            },
        )
        if record.status != "healthy":
            self._remove(client, server)
            reason = next(h for h in health if not h["passed"])
            message = (
                f"deploy of {spec.version.name} v{spec.version.version} failed at {reason['check']}: "
                f"{reason.get('detail')}"
            )
            if running is not None:
                message += f"; v{running.version} keeps serving at {running.endpoint}"
            raise DeployFailed(message, record)
        if s["router"]:
            recorded_router = ours.state.get("router") if ours is not None and ours.status != "stopped" else None
            self._rollout(client, spec, s, record, running, guard, labels, address, recorded_router)
        if running is not None:
            self._remove(client, running.state.get("container"))
        return record

    def _running(self, client: Any, current: Deployment | None) -> Deployment | None:
        """The recorded deployment when its server container still runs (the one blue/green keeps)."""
        if current is None or current.status != "healthy":
            return None
        container = docker_engine.get(client, (current.state.get("container") or {}).get("id"))
        if container is None or container.status != "running":
            return None
        if (container.labels or {}).get(LABEL_DEPLOYMENT) != current.state.get("deployment_id"):
            return None
        return current

    def _start(
        self,
        client: Any,
        spec: DeploySpec,
        s: dict[str, Any],
        image: str,
        source: str,
        labels: dict[str, str],
        address: str,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Create, fill and start the new version's container, then wait for it and check it."""
        APIError = docker_engine.sdk("docker.errors").APIError  # noqa: N806
        DeviceRequest = docker_engine.sdk("docker.types").DeviceRequest  # noqa: N806

        name = f"{s['name']}-v{spec.version.version}-{secrets.token_hex(3)}"
        model_dir = IMAGE_MODEL_DIR if source == "image" else COPIED_MODEL_DIR
        command = ["-I", "-m", "lepton_ci.serve", "--model-dir", model_dir, "--model-file", spec.model_file]
        command += ["--framework", spec.framework, "--name", spec.version.name, "--version", str(spec.version.version)]
        command += ["--host", address, "--port", "0", "--port-file", PORT_FILE]
        command += server_args(spec.options.get("server") or {})
        env = {**s["env"], "LEPTON_CI_MODEL": spec.version.name, "LEPTON_CI_MODEL_VERSION": str(spec.version.version)}
        extra: dict[str, Any] = {}
        if s["gpus"] is not None:
            count = -1 if str(s["gpus"]) == "all" else int(s["gpus"])
            extra["device_requests"] = [DeviceRequest(count=count, capabilities=[["gpu"]])]
        if s["memory"]:
            extra["mem_limit"] = s["memory"]
        info: dict[str, Any] = {"name": name}
        try:
            container = client.containers.create(
                image,
                command,
                entrypoint=["python"],
                name=name,
                labels={**labels, LABEL_ROLE: "server"},
                environment=env,
                network_mode="host",
                restart_policy={"Name": "unless-stopped"},
                detach=True,
                **extra,
            )
            info["id"] = container.id
            if source == "image":
                problem = docker_engine.model_files_problem(container, IMAGE_MODEL_DIR, spec.version.artifacts)
                if problem is not None:
                    raise TrustError(
                        f"refusing to deploy {spec.version.name} v{spec.version.version}: the image {image} does not "
                        f"hold the version's files ({problem})"
                    )
            if source == "copy":
                assert spec.model_dir is not None
                docker_engine.copy_model(container, spec.model_dir, COPIED_MODEL_DIR)
            container.start()
        except APIError as exc:
            self._remove(client, info)
            check = {"check": "start", "passed": False, "detail": docker_engine._short(exc)}
            return info, [check]
        except BaseException:
            self._remove(client, info)
            raise
        health = self._wait_ready(container, info, address, float(spec.options.get("ready_timeout", 60)))
        if all(h["passed"] for h in health):
            health += _check(spec, f"http://{address}:{info['port']}")
        for h in health:
            if h.get("check") != "smoke":
                h.pop("response", None)
        return info, health

    def _wait_ready(self, container: Any, info: dict[str, Any], address: str, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            container.reload()
            state = container.attrs.get("State") or {}
            if container.status in ("exited", "dead") or state.get("Restarting") or container.attrs.get("RestartCount"):
                detail = f"container exited with code {state.get('ExitCode')}: {docker_engine.logs_tail(container)}"
                return [{"check": "start", "passed": False, "detail": detail}]
            if "port" not in info:
                text = docker_engine.read_file(container, PORT_FILE)
                if text and text.strip().isdigit():
                    info["port"] = int(text.strip())
            if "port" in info:
                base = f"http://{address}:{info['port']}"
                ready = v2client.check("ready", "GET", f"{base}/v2/health/ready")
                if ready["passed"]:
                    return [v2client.check("live", "GET", f"{base}/v2/health/live"), ready]
            time.sleep(0.1)
        detail = f"not ready within {timeout:g}s: {docker_engine.logs_tail(container)}"
        return [{"check": "ready", "passed": False, "detail": detail}]

    def _rollout(
        self,
        client: Any,
        spec: DeploySpec,
        s: dict[str, Any],
        record: Deployment,
        running: Deployment | None,
        guard: slo.Settings | None,
        labels: dict[str, str],
        address: str,
        recorded_router: dict[str, Any] | None,
    ) -> None:
        """Move the router to the new container; with deploy.slo, first as the canary in front of the old
        one (whose answers replace the canary's errors) for the watch, and back to the old one on a breach."""
        from lepton_ci.deploy import local_router

        info = record.state
        new_addr = f"{address}:{info['container']['port']}"
        old = running.state if running is not None else None
        old_addr = f"{old['address']}:{old['container']['port']}" if old else None
        try:
            router = docker_router.ensure(
                client,
                record.image,
                f"{s['name']}-router",
                address,
                s["port"],
                {LABEL_NAME: spec.version.name, LABEL_DEPLOYMENT: labels[LABEL_DEPLOYMENT]},
                recorded_router,
            )
        except BaseException:
            self._remove(client, info["container"])
            raise
        info["router"] = router
        record.endpoint = f"http://{router['host']}:{router['port']}"
        try:
            if guard is None:
                docker_router.route(client, router, new_addr)
                local_router.publish_targets(spec.state_dir, [new_addr])
                return
            metrics = f"{info['server_endpoint']}/metrics"
            source = slo.source_for(guard, metrics, spec.version.name, spec.version.version)
            local_router.publish_targets(spec.state_dir, [a for a in (old_addr, new_addr) if a])
            baseline = slo.read_baseline(source)
            docker_router.route(client, router, old_addr or new_addr, canary=new_addr if old_addr else None)
            record.slo = slo.watch(guard, source, baseline=baseline)
            if record.slo["passed"]:
                docker_router.route(client, router, new_addr)
                local_router.publish_targets(spec.state_dir, [new_addr])
                return
        except BaseException:
            if old_addr is not None:  # an error mid-rollout: the old version takes the traffic back
                docker_router.route(client, router, old_addr)
            self._remove(client, info["container"])
            raise
        if old_addr is not None:
            docker_router.route(client, router, old_addr)
            local_router.publish_targets(spec.state_dir, [old_addr])
        self._remove(client, info["container"])
        record.status = "failed"
        message = (
            f"deploy of {spec.version.name} v{spec.version.version} rolled back: the SLO watch saw "
            f"{record.slo['reason']}"
        )
        if running is not None:
            message += f"; v{running.version} keeps serving at {record.endpoint}"
        raise DeployFailed(message, record)

    @staticmethod
    def _remove(client: Any, container: dict[str, Any] | None) -> None:
        c = docker_engine.get(client, (container or {}).get("id") or (container or {}).get("name"))
        if c is not None:
            docker_engine.remove(c, STOP_GRACE_S)

    def status(self, deployment: Deployment) -> Deployment:
        if deployment.status == "stopped":
            return deployment
        client = docker_engine.connect(str(deployment.state.get("engine") or docker_engine.engine_url({})))
        deployment_id = str(deployment.state.get("deployment_id"))
        server = docker_engine.get(client, (deployment.state.get("container") or {}).get("id"))
        if server is None or server.status != "running" or (server.labels or {}).get(LABEL_DEPLOYMENT) != deployment_id:
            state = "gone" if server is None else server.status
            deployment.status = "down"
            deployment.health = [{"check": "container", "passed": False, "detail": f"server container is {state}"}]
            return deployment
        router = deployment.state.get("router")
        if router and docker_router.is_router(client, router, deployment_id) is None:
            deployment.status = "down"
            deployment.health = [
                {"check": "router", "passed": False, "detail": f"router container {router.get('name')} is not running"}
            ]
            return deployment
        deployment.status, deployment.health = v2client.endpoint_health(deployment.endpoint, deployment.model)
        return deployment

    def stop(self, deployment: Deployment) -> Deployment:
        """Remove every container of the deployment (by its label): the server, the router, and any a
        crashed deploy left behind."""
        client = docker_engine.connect(str(deployment.state.get("engine") or docker_engine.engine_url({})))
        deployment_id = deployment.state.get("deployment_id")
        if deployment_id:
            found = client.containers.list(all=True, filters={"label": f"{LABEL_DEPLOYMENT}={deployment_id}"})
            for container in found:
                docker_engine.remove(container, STOP_GRACE_S)
        deployment.status = "stopped"
        deployment.health = []
        return deployment
