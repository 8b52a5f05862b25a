"""A full image build and push with the Docker Engine, through the docker SDK (`pip install lepton-ci[docker]`).

The engine is the one `DOCKER_HOST` names (or the local socket). Builds use the host network (a runner or
a rootless engine may have no bridge) and the classic builder, which is what the SDK drives. Every way
this can fail reaches the user as one line and exit 2: an engine that does not answer, a base image that
does not exist, a Dockerfile step that fails (its last lines are shown first), a registry that refuses
the push. A push sends the layers before the manifest, so a refused or interrupted push leaves no tag.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from lepton_ci.build.log import BuildLog
from lepton_ci.errors import RegistryError, UserError
from lepton_ci.oci.auth import find_credentials

_PROGRESS_STATUSES = {"Pushing", "Preparing", "Waiting", "Layer already exists", "Pushed", "Mounted from"}


def _engine() -> str:
    return os.environ.get("DOCKER_HOST") or "the local Docker socket (DOCKER_HOST is not set)"


def connect() -> Any:
    """A docker SDK client whose engine answered a ping."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        raise UserError("`lepton-ci build` needs the docker SDK: pip install 'lepton-ci[docker]'") from None
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except DockerException as exc:
        raise UserError(f"cannot reach the Docker Engine at {_engine()}: {_short(exc)}; set DOCKER_HOST") from None
    return client


def _short(exc: BaseException, limit: int = 240) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "…"


def ensure_image(client: Any, image: str, what: str, log: BuildLog) -> None:
    """The image is in the engine, or is pulled now; one line when it exists nowhere."""
    from docker.errors import APIError, ImageNotFound

    try:
        client.images.get(image)
        return
    except ImageNotFound:
        pass
    except APIError as exc:
        raise UserError(f"{what} {image!r}: the Docker Engine at {_engine()} failed: {_short(exc)}") from None
    log.note(f"pulling {image}")
    try:
        for event in client.api.pull(image, stream=True, decode=True):
            if "error" in event:
                raise APIError(str(event["error"]))
    except APIError as exc:
        raise UserError(
            f"{what} {image!r} does not exist: not in the engine and not pullable ({_short(exc)})"
        ) from None


def build(
    client: Any, ctx: Path, tags: list[str], log: BuildLog, *, target: str | None = None, dockerfile: str = "Dockerfile"
) -> str:
    """Build the context (classic builder, host network); returns the image ID. All `tags` are applied."""
    from docker.errors import APIError

    image_id = ""
    error = ""
    try:
        stream = client.api.build(
            path=str(ctx),
            dockerfile=dockerfile,
            tag=tags[0] if tags else None,
            target=target,
            network_mode="host",
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        )
        for event in stream:
            if "stream" in event:
                for text in str(event["stream"]).splitlines():
                    log.line(text)
                    m = re.match(r"Successfully built ([0-9a-f]{12,64})", text)
                    if m:
                        image_id = image_id or m.group(1)
            if "aux" in event and isinstance(event["aux"], dict) and event["aux"].get("ID"):
                image_id = str(event["aux"]["ID"])
            if "error" in event:
                error = str(event.get("errorDetail", {}).get("message") or event["error"])
                log.line(error)
    except APIError as exc:
        error = _short(exc)
    if error or not image_id:
        log.show_tail("the image build")
        raise UserError(
            f"{dockerfile}: the image build failed: {' '.join((error or 'no image was produced').split())[:300]}"
        )
    for tag in tags[1:]:
        repository, _, name = tag.rpartition(":")
        client.api.tag(image_id, repository, name)
    return image_id


def auth_config(host: str) -> dict[str, str] | None:
    """The registry's credentials as the engine takes them (LEPTON_REGISTRY_USER/PASSWORD or docker config)."""
    creds = find_credentials(host)
    if creds is None:
        return None
    if creds.identity_token:
        return {"identitytoken": creds.password}
    return {"username": creds.username, "password": creds.password}


def push(client: Any, repository: str, tag: str, log: BuildLog) -> tuple[str, int]:
    """Push one tag; returns (manifest digest, bytes sent as the engine reported them)."""
    from docker.errors import APIError

    host = repository.split("/", 1)[0]
    sent: dict[str, int] = {}
    digest = ""
    error = ""
    try:
        for event in client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth_config(host)):
            status = str(event.get("status", ""))
            if "error" in event:
                error = str(event.get("errorDetail", {}).get("message") or event["error"])
            elif status == "Pushing" and event.get("id"):
                current = int((event.get("progressDetail") or {}).get("current") or 0)
                sent[event["id"]] = max(sent.get(event["id"], 0), current)
            elif status and not any(status.startswith(s) for s in _PROGRESS_STATUSES):
                log.line(status)
            aux = event.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = str(aux["Digest"])
    except APIError as exc:
        error = _short(exc)
    if error or not digest:
        log.show_tail(f"the push of {repository}:{tag}")
        detail = " ".join((error or "no digest").split())[:240]
        raise RegistryError(f"the registry {host} refused the push of {repository}:{tag}: {detail}")
    log.line(f"pushed {repository}:{tag} {digest}")
    return digest, sum(sent.values())


def remove(client: Any, image: str) -> None:
    import contextlib

    from docker.errors import APIError

    with contextlib.suppress(APIError):
        client.api.remove_image(image, force=True, noprune=False)
