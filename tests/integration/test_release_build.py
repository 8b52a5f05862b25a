"""What a release builds, built for real from a clean copy of this checkout (.github/workflows/release.yml
runs the same commands on a tag):

- the sdist and the wheel (`python -m build`), passing `twine check --strict`, carrying the package data
  (report templates, JSON schemas, py.typed) and the `lepton-ci` entry point, and installing into a fresh
  venv where `lepton-ci --version` prints the release;
- the lepton-ci image (docker/Dockerfile through docker/build-image) on the real Docker engine, on the
  minimal base image `lepton-test/python:3.11` (no git of its own): git and lepton-ci run in it, also as a
  user other than root on a checkout owned by someone else, as CI runners mount projects.

`build` and `twine` come with the test extras; the engine and the base image from
scripts/deps/40-docker.sh (the image test skips without them, but fails under scripts/test or CI=true).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import GitRepo
from tests.support.docker import (
    BASE_IMAGE,
    ROOT,
    build_dist,
    build_image,
    copy_checkout,
    remove_image,
    require_docker,
    run,
    wheelhouse,
)

pytestmark = pytest.mark.slow


def _version() -> str:
    found = re.search(r'^__version__ = "([^"]+)"', (ROOT / "lepton_ci" / "__init__.py").read_text(), re.M)
    assert found, "no __version__ in lepton_ci/__init__.py"
    return found[1]


VERSION = _version()
PACKAGE_DATA = sorted(
    str(p.relative_to(ROOT))
    for pattern in ("templates/*.j2", "schemas/*.json", "py.typed")
    for p in (ROOT / "lepton_ci").glob(pattern)
)


@dataclass
class Dist:
    src: Path  # the clean copy of the checkout it was built from
    dir: Path
    sdist: Path
    wheel: Path


def _require_module(name: str) -> None:
    try:
        __import__(name)
    except ImportError:
        import os

        msg = f"{name} is not installed (it is in the `test` extras: pip install -e '.[test]')"
        if os.environ.get("CI") == "true" or os.environ.get("LEPTON_DOCKER"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    _require_module("build")
    base = tmp_path_factory.mktemp("release-build")
    src = copy_checkout(base / "src")
    sdist, wheel = build_dist(src, base / "dist")
    return Dist(src, base / "dist", sdist, wheel)


def test_names_carry_the_version(dist: Dist) -> None:
    assert dist.sdist.name == f"lepton_ci-{VERSION}.tar.gz"
    assert dist.wheel.name == f"lepton_ci-{VERSION}-py3-none-any.whl"


def test_twine_check_strict(dist: Dist) -> None:
    _require_module("twine")
    proc = run(sys.executable, "-m", "twine", "check", "--strict", dist.sdist, dist.wheel, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASSED") == 2, proc.stdout


def test_wheel_carries_package_data_and_entry_point(dist: Dist) -> None:
    assert PACKAGE_DATA and "lepton_ci/py.typed" in PACKAGE_DATA
    assert any(p.startswith("lepton_ci/templates/") for p in PACKAGE_DATA)
    assert any(p.startswith("lepton_ci/schemas/") for p in PACKAGE_DATA)
    with zipfile.ZipFile(dist.wheel) as whl:
        names = set(whl.namelist())
        info = f"lepton_ci-{VERSION}.dist-info"
        entry_points = whl.read(f"{info}/entry_points.txt").decode()
        metadata = whl.read(f"{info}/METADATA").decode()
    assert not [p for p in PACKAGE_DATA if p not in names], "package data missing from the wheel"
    package = dist.src / "lepton_ci"
    sources = {str(p.relative_to(dist.src)) for p in package.rglob("*.py") if "__pycache__" not in p.parts}
    assert not sorted(sources - names), "modules missing from the wheel"
    assert not [n for n in names if n.startswith(("tests/", "examples/", "benchmarks/", "scripts/"))]
    assert re.search(r"^lepton-ci = lepton_ci\.cli:main$", entry_points, re.M), entry_points
    assert f"\nVersion: {VERSION}\n" in metadata
    assert "Requires-Python: >=3.11" in metadata
    assert "Provides-Extra: sklearn" in metadata


def test_sdist_builds_the_same_package(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    for needed in ("setup.cfg", "pyproject.toml", "README.md", "PKG-INFO", *PACKAGE_DATA):
        assert needed in names, needed


@pytest.fixture(scope="module")
def wheels(dist: Dist) -> Path:
    """The wheel's dependencies, built once on the host: the fresh venv and the image install offline."""
    return wheelhouse(dist.dir / "wheels", str(dist.wheel))


def test_wheel_installs_into_a_fresh_venv(dist: Dist, wheels: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    proc = run(
        venv / "bin" / "python",
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-index",
        "--find-links",
        wheels,
        dist.wheel,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    version = run(venv / "bin" / "lepton-ci", "--version", cwd=tmp_path, timeout=60)
    assert version.returncode == 0 and version.stdout.split()[-1] == VERSION, version
    # The package data is found from the installed package, not from a checkout.
    data = run(
        venv / "bin" / "python",
        "-c",
        "import importlib.resources as r; print(sorted(p.name for p in r.files('lepton_ci').iterdir()))",
        cwd=tmp_path,
        timeout=60,
    )
    assert "'py.typed'" in data.stdout and "'templates'" in data.stdout and "'schemas'" in data.stdout, data


# ---- the lepton-ci image on the real Docker engine ---------------------------------------------------------


@pytest.fixture(scope="module")
def image(dist: Dist) -> Iterator[tuple[str, str]]:
    docker = require_docker()
    tag = f"lepton-test/lepton-ci:{VERSION}-{uuid.uuid4().hex[:8]}"
    built = build_image(docker, dist.wheel, tag)
    try:
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-5000:]
        yield docker, tag
    finally:
        remove_image(docker, tag)


def test_image_runs_git_and_lepton_ci(image: tuple[str, str]) -> None:
    docker, tag = image
    proc = run(
        docker, "run", "--rm", "--network", "host", tag, "sh", "-c", "git --version && lepton-ci --version", timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    git_line, lepton_line = proc.stdout.strip().splitlines()[-2:]
    assert git_line.startswith("git version "), proc.stdout
    assert lepton_line.split()[-1] == VERSION, proc.stdout
    labels = run(
        docker,
        "image",
        "inspect",
        "--format",
        '{{index .Config.Labels "org.opencontainers.image.version"}}',
        tag,
        timeout=30,
    )
    assert labels.stdout.strip() == VERSION


def test_image_base_is_the_minimal_one_without_git(image: tuple[str, str]) -> None:
    """The image test proves the Dockerfile installs git: its base has none."""
    docker, _ = image
    proc = run(
        docker, "run", "--rm", "--network", "host", BASE_IMAGE, "sh", "-c", "command -v git || echo no-git", timeout=120
    )
    assert proc.stdout.strip() == "no-git", proc


def test_image_works_for_another_user_on_a_mounted_checkout(image: tuple[str, str], git_repo: GitRepo) -> None:
    """A runner mounts the project owned by someone else, and may run the job as any uid: git still reads
    the revision (safe.directory) and lepton-ci runs with no writable home."""
    docker, tag = image
    sha = git_repo.commit({"lepton.yml": "model:\n  name: m\n"})
    proc = run(
        docker,
        "run",
        "--rm",
        "--network",
        "host",
        "--user",
        "4242:4242",
        "-e",
        "HOME=/nonexistent",
        "-v",
        f"{git_repo.path}:/builds/group/project:ro",
        "-w",
        "/builds/group/project",
        tag,
        "sh",
        "-c",
        "git rev-parse HEAD && lepton-ci --version",
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split()[0] == sha, proc.stdout
