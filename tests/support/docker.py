"""The real Docker engine for the tests: finding it, a clean copy of the checkout, lepton-ci's wheel and
wheelhouse, and the lepton-ci image built by docker/build-image.

scripts/deps/40-docker.sh starts dockerd (DOCKER_HOST) and builds the base image `lepton-test/python:3.11`
(Debian bookworm minbase with python3 and python3-venv, no git). Without them the tests skip, except under
scripts/test (LEPTON_DOCKER=1) or CI=true, where a missing engine or image fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.checkout import ROOT, copy_checkout  # noqa: F401 (re-exported)

BASE_IMAGE = "lepton-test/python:3.11"
BUILD_IMAGE = ROOT / "docker" / "build-image"


def missing(msg: str) -> None:
    """A missing component: skip off CI, fail under scripts/test and CI=true (where it is a defect)."""
    if os.environ.get("CI") == "true" or os.environ.get("LEPTON_DOCKER"):
        pytest.fail(msg)
    pytest.skip(msg)


def run(
    *cmd: str | Path, timeout: float = 600, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **env} if env else None,
    )


def require_docker() -> str:
    """The docker CLI, once the engine answers and the base image is there."""
    docker = shutil.which("docker")
    if not docker:
        missing("the docker CLI is missing: scripts/test installs it (scripts/deps/40-docker.sh)")
        raise AssertionError("unreachable")
    if not os.environ.get("DOCKER_HOST"):
        missing("DOCKER_HOST is not set: scripts/test starts dockerd (scripts/deps/40-docker.sh)")
    probe = run(docker, "version", "--format", "{{.Server.Version}}", timeout=30)
    if probe.returncode != 0:
        missing(f"the Docker engine at {os.environ['DOCKER_HOST']} does not answer: {probe.stderr.strip()}")
    if run(docker, "image", "inspect", BASE_IMAGE, timeout=30).returncode != 0:
        missing(f"the base image {BASE_IMAGE} is missing: scripts/deps/40-docker.sh builds it")
    return docker


def build_dist(src: Path, out: Path) -> tuple[Path, Path]:
    """`python -m build` (sdist, then the wheel from it, as PyPI users get it); returns (sdist, wheel)."""
    proc = run(sys.executable, "-m", "build", "--outdir", out, src, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sdist,) = out.glob("lepton_ci-*.tar.gz")
    (wheel,) = out.glob("lepton_ci-*-py3-none-any.whl")
    return sdist, wheel


def wheelhouse(dest: Path, *requirements: str) -> Path:
    """Wheels for `requirements` and all their dependencies, built on the host (for offline installs)."""
    proc = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--disable-pip-version-check",
        "--wheel-dir",
        dest,
        *requirements,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dest


def build_image(docker: str, wheel: Path, tag: str, extras: str = "") -> subprocess.CompletedProcess[str]:
    """docker/build-image on the base image, as the release workflow runs it (the base's Python is 3.11,
    like this venv's, so the host-built wheelhouse fits)."""
    assert docker
    cmd: list[str | Path] = [BUILD_IMAGE, "--wheel", wheel, "--tag", tag, "--base", BASE_IMAGE]
    if extras:
        cmd += ["--extras", extras]
    return run(*cmd, timeout=900, env={"PYTHON": sys.executable})


def remove_image(docker: str, tag: str) -> None:
    run(docker, "image", "rm", "--force", tag, timeout=120)
