"""The Docker host a `docker` deployment runs on, through the docker SDK: connecting, finding the image,
and the few container operations the target and its router need (files in and out, exec).

Why a module of its own: every SDK failure must reach the user as one line naming what was asked for
(the engine URL, `deploy.image`), and the target should read as a rollout, not as error plumbing.
The SDK and paramiko (for `ssh://` engines) are imported only here, and only when a docker deploy runs.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import tarfile
import time
from pathlib import Path
from typing import Any

from lepton_ci.errors import TransientError, UserError

CONNECT_TIMEOUT_S = 60


def sdk(module: str) -> Any:
    """A module of the docker SDK (`docker`, `docker.errors`, `docker.types`), imported when needed.
    Through importlib because the repository's own docker/ folder (shell scripts) shadows the SDK for mypy."""
    return importlib.import_module(module)


def _short(exc: BaseException, limit: int = 240) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "…"


def engine_url(settings: dict[str, Any]) -> str:
    """`deploy.docker.engine`, else DOCKER_HOST, else the local socket (what the docker CLI uses)."""
    return str(settings.get("engine") or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock")


def connect(url: str) -> Any:
    """A docker SDK client whose engine answered a ping. Nothing is created before this succeeds, so an
    unreachable engine (a refused socket, an `ssh://` host that does not connect) leaves nothing behind."""
    try:
        docker = sdk("docker")
    except ImportError:
        raise UserError("the docker deploy target needs the docker SDK: pip install 'lepton-ci[docker]'") from None
    if url.startswith("ssh://"):
        try:
            import paramiko  # type: ignore[import-untyped]  # noqa: F401  (the SDK's ssh:// transport)
        except ImportError:
            raise UserError(f"Docker host {url}: ssh:// needs paramiko: pip install 'lepton-ci[docker]'") from None
    try:
        client = docker.DockerClient(base_url=url, timeout=CONNECT_TIMEOUT_S)
        client.ping()
    except Exception as exc:  # the SDK, requests, paramiko and socket errors all mean "not reachable"
        raise UserError(
            f"cannot reach the Docker host {url} (deploy.docker.engine / DOCKER_HOST): {_short(exc)}"
        ) from None
    return client


def resolve_image(client: Any, image: str, url: str) -> Any:
    """The image on the engine, pulled when it is not there yet; one line when it exists nowhere."""
    errors = sdk("docker.errors")
    APIError, ImageNotFound = errors.APIError, errors.ImageNotFound  # noqa: N806

    try:
        return client.images.get(image)
    except ImageNotFound:
        pass
    except APIError as exc:
        raise TransientError(f"deploy.image {image}: the Docker host {url} failed: {_short(exc)}") from None
    try:
        return client.images.pull(image)
    except (APIError, ImageNotFound) as exc:
        raise UserError(
            f"deploy.image {image} does not exist: not on the Docker host {url} and not pullable ({_short(exc)})"
        ) from None


def tar_of(files: dict[str, tuple[bytes, int]], dirs: list[str] | None = None) -> bytes:
    """A tar (PAX, so mtimes keep their fraction) of `files` {path: (bytes, mode)} and `dirs` (0555)."""
    buf = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in dirs or []:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o555, now
            tar.addfile(info)
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), mode, now
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def copy_model(container: Any, model_dir: Path, dest: str) -> None:
    """Put the verified model files into a created (not yet started) container at `dest`, read-only.
    Works the same for a remote engine: the bytes travel in the API call, nothing is bind-mounted."""
    name = dest.strip("/")
    files: dict[str, tuple[bytes, int]] = {}
    dirs = [name]
    for path in sorted(model_dir.rglob("*")):
        rel = f"{name}/{path.relative_to(model_dir).as_posix()}"
        if path.is_dir():
            dirs.append(rel)
        else:
            files[rel] = (path.read_bytes(), 0o444)
    if not container.put_archive("/", tar_of(files, dirs)):
        raise TransientError(f"could not copy the model into container {container.name}")


def read_file(container: Any, path: str) -> str | None:
    """A small text file from a container (running or not), or None when it is not there (yet)."""
    errors = sdk("docker.errors")
    APIError, NotFound = errors.APIError, errors.NotFound  # noqa: N806

    try:
        stream, _ = container.get_archive(path)
        raw = b"".join(stream)
    except (NotFound, APIError):
        return None
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        member = next((m for m in tar.getmembers() if m.isfile()), None)
        extracted = tar.extractfile(member) if member is not None else None
        return extracted.read().decode(errors="replace") if extracted is not None else None


def model_files_problem(container: Any, path: str, artifacts: list[dict[str, Any]]) -> str | None:
    """None when `path` in a created container holds exactly the version's files, byte for byte.

    The image's label names the model it was built with, but a label is only a claim: a tag repointed, an
    image.json edited between jobs, or a later layer that replaced a file would all keep it. So the files
    the server will load are read back from the container (the merged view of every layer, as the server
    sees it) and hashed against the version's manifest, which deploy has verified against the gate's
    signature. Links, devices and other non-regular files are refused: the server must read exactly these
    bytes and nothing they point to.
    """
    import hashlib
    import tempfile

    errors = sdk("docker.errors")
    try:
        stream, _ = container.get_archive(path)
    except (errors.NotFound, errors.APIError) as exc:
        return f"cannot read {path} in the image: {_short(exc)}"
    found: dict[str, str] = {}
    with tempfile.TemporaryFile() as spool:
        for chunk in stream:
            spool.write(chunk)
        spool.seek(0)
        with tarfile.open(fileobj=spool, mode="r|") as tar:
            for member in tar:
                rel = member.name.split("/", 1)[1] if "/" in member.name else ""
                if member.isdir():
                    continue
                if not member.isfile() or not rel:
                    return f"{path}/{rel or member.name} is not a regular file"
                extracted = tar.extractfile(member)
                assert extracted is not None
                digest = hashlib.sha256()
                while block := extracted.read(1 << 20):
                    digest.update(block)
                found[rel] = digest.hexdigest()
    expected = {str(a["path"]): str(a["sha256"]).removeprefix("sha256:") for a in artifacts}
    extra, missing = sorted(set(found) - set(expected)), sorted(set(expected) - set(found))
    if extra or missing:
        return ", ".join([f"unexpected {p}" for p in extra[:3]] + [f"missing {p}" for p in missing[:3]])
    changed = sorted(p for p in expected if found[p] != expected[p])
    return f"{changed[0]} differs from the version's file" if changed else None


def logs_tail(container: Any, lines: int = 8) -> str:
    try:
        text = container.logs(tail=lines).decode(errors="replace").strip()
    except Exception:  # the container is gone: there is nothing more to say
        return ""
    return " | ".join(text.splitlines()[-lines:])


def remove(container: Any, grace_s: float) -> None:
    """Stop (SIGTERM: the server drains; SIGKILL after `grace_s`) and remove a container; gone is fine."""
    errors = sdk("docker.errors")
    APIError, NotFound = errors.APIError, errors.NotFound  # noqa: N806

    with contextlib.suppress(NotFound, APIError):
        container.stop(timeout=int(grace_s))
    try:
        container.remove(force=True)
    except NotFound:
        pass
    except APIError as exc:
        if "already in progress" not in str(exc):
            raise TransientError(f"could not remove container {container.name}: {_short(exc)}") from None


def get(client: Any, ident: str | None) -> Any | None:
    """A container by id or name, or None when it is gone."""
    NotFound = sdk("docker.errors").NotFound  # noqa: N806

    if not ident:
        return None
    try:
        return client.containers.get(ident)
    except NotFound:
        return None
