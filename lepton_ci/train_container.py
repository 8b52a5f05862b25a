"""`train.image`: the training command run inside a container, through the docker SDK.

The project directory is mounted at its own path and is the working directory, so every path in lepton.yml,
the run directory and the records mean the same inside and out; the container uses the host's network (as
`--network host`) and runs as the caller's uid:gid so the files it writes stay the caller's. GPUs are asked
for the way `docker run --gpus all` does: one DeviceRequest with the `gpu` capability (count -1: all, or N).

Only chosen variables enter the container (train.env, train.env_passthrough, the LEPTON_* run variables):
the host's PATH or HOME would mean nothing inside the image, and its secrets must not go in at all.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from lepton_ci.errors import StepFailed, TransientError, UserError


def _docker() -> Any:
    """The docker SDK (imported by name: the repository's own docker/ folder would shadow it for mypy)."""
    try:
        return importlib.import_module("docker")
    except ImportError:
        raise UserError("train.image needs the docker SDK: pip install 'lepton-ci[docker]'") from None


def device_requests(gpus: Any) -> list[Any]:
    """The docker SDK's DeviceRequest for `train.gpus` ('all' or a count); [] when no GPU is asked for."""
    DeviceRequest = _docker().types.DeviceRequest  # noqa: N806

    if gpus == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if isinstance(gpus, int) and not isinstance(gpus, bool) and gpus > 0:
        return [DeviceRequest(count=gpus, capabilities=[["gpu"]])]
    return []


def _client() -> Any:
    docker = _docker()
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise TransientError(f"train.image: cannot reach the Docker engine ({exc}); is dockerd running?") from None
    return client


def run_in_container(
    image: str,
    command: str,
    *,
    root: Path,
    workdir: Path,
    env: dict[str, str],
    log_path: Path,
    timeout: float | None,
    gpus: Any = 0,
    quiet: bool = False,
    to_stderr: bool = False,
) -> tuple[int, bool, float]:
    """Run `command` with /bin/sh -c inside `image`; returns (exit code, timed out, seconds) like run_command."""
    docker = _docker()

    client = _client()
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise UserError(f"train.image {image!r} is not on this machine (docker pull it first)") from None
    start = time.monotonic()
    root = root.resolve()
    try:
        container = client.containers.run(
            image,
            ["/bin/sh", "-c", command],
            detach=True,
            working_dir=str(workdir.resolve()),
            volumes={str(root): {"bind": str(root), "mode": "rw"}},
            environment=env,
            network_mode="host",
            user=f"{os.getuid()}:{os.getgid()}",
            device_requests=device_requests(gpus),
            stdin_open=False,
        )
    except docker.errors.APIError as exc:
        explanation = str(getattr(exc, "explanation", None) or exc).splitlines()[0]
        if device_requests(gpus):
            raise UserError(
                f"train.gpus: the Docker engine could not give the container GPUs ({explanation}); "
                "install the NVIDIA Container Toolkit and check `lepton-ci doctor`"
            ) from None
        raise StepFailed(f"train.image {image!r}: the container did not start: {explanation}") from None
    out = sys.stderr.buffer if to_stderr else sys.stdout.buffer
    timed_out = False
    try:
        reader = threading.Thread(target=_copy_logs, args=(container, log_path, out, quiet), daemon=True)
        reader.start()
        try:
            result = container.wait(timeout=timeout)
            code = int(result.get("StatusCode", 1))
        except Exception:  # noqa: BLE001 - requests' ReadTimeout: the run outlived train.timeout
            timed_out = True
            container.kill()
            code = int(container.wait(timeout=30).get("StatusCode", 137))
        reader.join(timeout=10)
    finally:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
    return code, timed_out, time.monotonic() - start


def _copy_logs(container: Any, log_path: Path, out: Any, quiet: bool) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as log:
        for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
            log.write(chunk)
            if not quiet:
                out.write(chunk)
                out.flush()


def container_env(env: dict[str, str], section: dict[str, Any]) -> dict[str, str]:
    """The variables that enter the container: the run's own (run dir, params, LEPTON_PARAM_*), train.env and
    the train.env_passthrough names."""
    from lepton_ci import tracking

    keep = {str(k) for k in (section.get("env") or {})} | set(section.get("env_passthrough") or [])
    keep |= {tracking.RUN_DIR_ENV, tracking.PARAMS_ENV, "LEPTON_CI_RUN_ID"}
    return {k: v for k, v in env.items() if k in keep or k.startswith("LEPTON_PARAM_")}
