"""Lepton deploy target: the serving image as a deployment on DGX Cloud Lepton, through `leptonai`.

The request bodies are built with the platform's own pydantic types (`LeptonDeployment` and friends) and
sent by its own client, so a field the platform renamed or a value it refuses fails here, in CI, with
the platform's words, not as a silently ignored key. The client also picks the workspace's API family
(the legacy /deployments routes or the newer /endpoints ones).

The token comes from an environment variable (a CI secret; `deploy.lepton.token_env`, default leptonai's
own LEPTON_WORKSPACE_TOKEN). It is registered for masking before the first request, so no error message
can print it, and it is never written to deployment.json.
"""

from __future__ import annotations

import os
import time
from typing import Any, NoReturn

from lepton_ci.deploy.base import (
    DeployFailed,
    DeploySpec,
    discard_model_copy,
    k8s_name,
    pinned_image,
    previous_summary,
)
from lepton_ci.deploy.manifests import SERVER_PORT
from lepton_ci.errors import TransientError, UserError
from lepton_ci.records import Deployment
from lepton_ci.timeutil import utcnow

DEFAULT_TOKEN_ENV = "LEPTON_WORKSPACE_TOKEN"
POLL_S = 2.0
# States the platform reports for a deployment that will not become ready without someone's help.
FAILED_STATES = ("Error",)


def settings(options: dict[str, Any], model: str) -> dict[str, Any]:
    """`deploy.lepton` with defaults filled in; the workspace and URL fall back to leptonai's variables."""
    lp = dict(options.get("lepton") or {})
    return {
        "name": lp.get("name") or k8s_name(model, limit=36),
        "workspace": lp.get("workspace") or os.environ.get("LEPTON_WORKSPACE_ID"),
        "url": lp.get("url") or os.environ.get("LEPTON_WORKSPACE_URL"),
        "token_env": lp.get("token_env", DEFAULT_TOKEN_ENV),
        "resource_shape": lp.get("resource_shape", "cpu.small"),
        "min_replicas": int(lp.get("min_replicas", 1)),
        "max_replicas": lp.get("max_replicas"),
        "public": bool(lp.get("public", False)),
        "endpoint_token_secret": lp.get("endpoint_token_secret"),
        "image_pull_secrets": list(lp.get("image_pull_secrets") or []),
        "env": dict(lp.get("env") or {}),
        "ready_timeout": float(lp.get("ready_timeout", 600)),
    }


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines)[:300] or type(exc).__name__


def _fail(exc: Exception, doing: str, s: dict[str, Any]) -> NoReturn:
    """Turn a leptonai/requests exception into one lepton-ci error: a refused token or body is the user's
    to fix (exit 2), a 5xx or a dropped connection is transient (still exit 2, never "nothing there")."""
    import requests
    from leptonai.api.v2.api_resource import ClientError
    from leptonai.api.v2.utils import WorkspaceForbiddenError, WorkspaceNotFoundError, WorkspaceUnauthorizedError

    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, WorkspaceUnauthorizedError | WorkspaceForbiddenError) or status in (401, 403):
        raise UserError(
            f"Lepton refused the token in ${s['token_env']} while {doing} (HTTP {status or 401}): "
            "check the CI secret and its workspace"
        ) from None
    if isinstance(exc, WorkspaceNotFoundError):
        raise UserError(f"Lepton workspace {s['workspace']!r} not found while {doing}") from None
    if isinstance(exc, ClientError):
        raise UserError(f"Lepton refused {doing}: {_one_line(exc)}") from None
    if isinstance(exc, requests.RequestException):
        raise TransientError(f"Lepton could not be reached while {doing}: {_one_line(exc)}") from None
    raise TransientError(f"Lepton failed while {doing}: {_one_line(exc)}") from None


def _api(s: dict[str, Any]) -> Any:
    """The workspace's deployment API, after checking the token against the workspace."""
    token = os.environ.get(s["token_env"], "")
    if not token:
        raise UserError(
            f"no Lepton token: set ${s['token_env']} from a CI secret (deploy.lepton.token_env names the variable)"
        )
    if not s["workspace"]:
        raise UserError("no Lepton workspace: set deploy.lepton.workspace or LEPTON_WORKSPACE_ID")
    from lepton_ci.forge.http import register_secret

    register_secret(token)
    from leptonai.api.v2.client import APIClient

    try:
        client = APIClient(workspace_id=s["workspace"], auth_token=token, url=s["url"])
        client.info()
        return client.deployment
    except Exception as exc:  # noqa: BLE001 - every failure becomes one classified line
        _fail(exc, "checking the workspace", s)


def build_body(spec: DeploySpec, image: str, s: dict[str, Any], *, create: bool) -> Any:
    """The LeptonDeployment for this version, checked by the platform's own types. Authentication is set
    on create only: an update that left it out keeps the endpoint's tokens."""
    from leptonai.api.v2.types.common import Metadata
    from leptonai.api.v2.types.deployment import (
        ContainerPort,
        EnvVar,
        HealthCheck,
        HealthCheckLiveness,
        HealthCheckTCP,
        LeptonContainer,
        LeptonDeployment,
        LeptonDeploymentUserSpec,
        ResourceRequirement,
        TokenValue,
        TokenVar,
    )
    from pydantic import ValidationError

    mv = spec.version
    labels = {"lepton-ci-model": k8s_name(mv.name), "lepton-ci-version": str(mv.version)}
    envs = {"LEPTON_CI_MODEL": mv.name, "LEPTON_CI_MODEL_VERSION": str(mv.version), **s["env"]}
    try:
        auth: dict[str, Any] = {}
        if create and s["public"]:
            auth["allow_unauthenticated_access"] = True
        elif create and s["endpoint_token_secret"]:
            auth["api_tokens"] = [TokenVar(value_from=TokenValue(token_name_ref=s["endpoint_token_secret"]))]
        resources: dict[str, Any] = {"resource_shape": s["resource_shape"], "min_replicas": s["min_replicas"]}
        if s["max_replicas"] is not None:
            resources["max_replicas"] = int(s["max_replicas"])
        return LeptonDeployment(
            metadata=Metadata(name=s["name"], labels=labels),
            spec=LeptonDeploymentUserSpec(
                container=LeptonContainer(image=image, ports=[ContainerPort(container_port=SERVER_PORT)]),
                resource_requirement=ResourceRequirement(**resources),
                envs=[EnvVar(name=k, value=v) for k, v in envs.items()],
                image_pull_secrets=s["image_pull_secrets"] or None,
                health=HealthCheck(liveness=HealthCheckLiveness(tcp=HealthCheckTCP(port=SERVER_PORT))),
                **auth,
            ),
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise UserError(f"deploy.lepton: the platform's types refuse {where or 'the spec'}: {first['msg']}") from None


def _get(api: Any, name: str, s: dict[str, Any]) -> Any | None:
    """The deployment, or None when the platform says it does not exist."""
    try:
        return api.get(name)
    except Exception as exc:  # noqa: BLE001
        if getattr(getattr(exc, "response", None), "status_code", None) == 404:
            return None
        _fail(exc, f"reading deployment {name!r}", s)


def _state(dep: Any) -> tuple[str, str, str]:
    """(state, external endpoint, image) of a LeptonDeployment answer."""
    status, spec = dep.status, dep.spec
    state = status.state.value if status is not None else "UNK"
    endpoint = status.endpoint.external_endpoint if status is not None else ""
    image = spec.container.image if spec is not None and spec.container is not None else ""
    return state, endpoint or "", image or ""


class LeptonTarget:
    name = "lepton"

    def deploy(self, spec: DeploySpec, current: Deployment | None) -> Deployment:
        try:
            return self._deploy(spec, current)
        finally:
            discard_model_copy(spec)

    def _deploy(self, spec: DeploySpec, current: Deployment | None) -> Deployment:
        image = pinned_image(spec)
        s = settings(spec.options, spec.version.name)
        create_body = build_body(spec, image, s, create=True)  # refuse bad config before any request
        api = _api(s)
        existing = _get(api, s["name"], s)
        try:
            if existing is None:
                api.create_with_response(create_body)
            else:
                api.update(s["name"], build_body(spec, image, s, create=False))
        except Exception as exc:  # noqa: BLE001
            _fail(exc, f"{'updating' if existing is not None else 'creating'} deployment {s['name']!r}", s)
        ok, detail, endpoint = self._wait(api, s, image)
        record = Deployment(
            target=self.name,
            model=spec.version.name,
            version=spec.version.version,
            digest=spec.version.digest,
            endpoint=endpoint,
            image=image,
            status="healthy" if ok else "failed",
            health=[{"check": "ready", "passed": ok, "detail": detail}],
            created=utcnow(),
            previous=previous_summary(current),
            state={"name": s["name"], "workspace": s["workspace"], "url": s["url"], "token_env": s["token_env"]},
        )
        if not ok:
            message = f"deploy of {record.model} v{record.version} to Lepton failed: {detail}"
            if existing is not None and _state(existing)[2] not in ("", image):
                message += self._put_back(api, s, existing)
            raise DeployFailed(message, record)
        return record

    def _put_back(self, api: Any, s: dict[str, Any], previous: Any) -> str:
        """After a failed rollout, give the deployment back the container (image, ports) it ran before."""
        from leptonai.api.v2.types.deployment import LeptonDeployment, LeptonDeploymentUserSpec

        body = LeptonDeployment(spec=LeptonDeploymentUserSpec(container=previous.spec.container))
        try:
            api.update(s["name"], body)
        except Exception as exc:  # noqa: BLE001
            return f"; the previous image could NOT be put back: {_one_line(exc)}"
        return f"; the previous image {previous.spec.container.image} was put back"

    def _wait(self, api: Any, s: dict[str, Any], image: str) -> tuple[bool, str, str]:
        """Poll until the deployment runs this image and is Ready, fails, or `ready_timeout` passes."""
        deadline = time.monotonic() + s["ready_timeout"]
        state, endpoint = "UNK", ""
        while True:
            dep = _get(api, s["name"], s)
            if dep is None:
                return False, f"deployment {s['name']!r} disappeared", ""
            state, endpoint, running = _state(dep)
            if state == "Ready" and running == image:
                return True, "Ready", endpoint
            if state in FAILED_STATES:
                return False, f"the platform reports {state}", endpoint
            if time.monotonic() >= deadline:
                return False, f"not Ready within {s['ready_timeout']:g}s (state {state})", endpoint
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))

    def _api_for(self, deployment: Deployment) -> tuple[Any, dict[str, Any]]:
        st = deployment.state
        s = {
            "name": st.get("name"),
            "workspace": st.get("workspace"),
            "url": st.get("url"),
            "token_env": st.get("token_env") or DEFAULT_TOKEN_ENV,
        }
        if not s["name"]:
            raise UserError("the recorded Lepton deployment has no name")
        return _api(s), s

    def status(self, deployment: Deployment) -> Deployment:
        if deployment.status == "stopped":
            return deployment
        api, s = self._api_for(deployment)
        dep = _get(api, s["name"], s)
        if dep is None:
            deployment.status = "down"
            deployment.health = [{"check": "exists", "passed": False, "detail": f"no deployment {s['name']!r}"}]
            return deployment
        state, endpoint, running = _state(dep)
        ok = state == "Ready" and (not deployment.image or running == deployment.image)
        detail = state if running == deployment.image else f"{state}, but it runs {running or 'no image'}"
        deployment.health = [{"check": "ready", "passed": ok, "detail": detail}]
        deployment.endpoint = endpoint or deployment.endpoint
        deployment.status = "healthy" if ok else "unhealthy"
        return deployment

    def stop(self, deployment: Deployment) -> Deployment:
        """Scale to zero replicas (Lepton's own "stop"): the deployment, its endpoint and tokens stay."""
        api, s = self._api_for(deployment)
        try:
            api.stop(s["name"])
        except Exception as exc:  # noqa: BLE001
            _fail(exc, f"stopping deployment {s['name']!r}", s)
        deployment.status = "stopped"
        deployment.health = []
        return deployment
