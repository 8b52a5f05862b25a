"""One real full `lepton-ci build` per test session, shared by every test that needs a serving image.

A full build costs a minute or more on an engine with the vfs storage driver (each layer is a full copy
of the file system), so the suite makes exactly one: the wine project's (tests/support/wine_project.py, a
random forest large enough that its files dwarf a manifest), trained, gated, signed and tagged v1, built
from the suite's base image `lepton-test/python:3.11` and pushed to a session registry. Its users:
- tests/integration/test_build.py inspects that build and rebuilds on it;
- tests/integration/test_deploy_docker.py deploys other models onto its base image (no model inside, so
  the docker target copies each version's verified files in);
- the act and gitlab-ci-local workflows build their own model on it: `repository(name)` gives each a fresh
  repository that holds the base under its `base-…` tag, so their `lepton-ci build` is a daemonless
  model-only rebuild, as a project's every build after its first is.

Services: dockerd and the base image from scripts/deps/40-docker.sh, the registry binary from
50-oci-registry.sh. The wheelhouse is cached under the test cache directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import cli
from tests.support.docker import BASE_IMAGE, ROOT, require_docker, run
from tests.support.keys import PRIVATE_PEM, PUBLIC_PEM
from tests.support.oci_registry import RegistryServer
from tests.support.wine_project import TRAIN

MODEL = "wine"
REPOSITORY = "team/wine-serve"
MANIFEST_TYPES = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def cache_dir() -> Path:
    """The test cache (wheelhouse, base rootfs, the engine's data root): kept between runs."""
    if os.environ.get("LEPTON_TEST_CACHE"):
        return Path(os.environ["LEPTON_TEST_CACHE"])
    return Path("/var/cache/lepton-ci-test") if os.geteuid() == 0 else ROOT / ".cache" / "lepton-ci-test"


def wheel_cache() -> Path:
    return cache_dir() / "wheelhouse" / f"py{sys.version_info[0]}{sys.version_info[1]}"


def wine_config(image: str, base_image: str = BASE_IMAGE, **build: str) -> str:
    extra = "".join(f"  {k}: {v}\n" for k, v in build.items())
    return f"""\
version: 1
model:
  name: {MODEL}
  framework: sklearn
  file: model.joblib
train:
  command: {sys.executable} train.py
  params: {{n_estimators: 800}}
  metrics: [metrics.json]
  artifacts: [model.joblib]
gate:
  rules:
    - metric: eval.accuracy
      min: 0.8
registry: file://.lepton/registry
signing:
  public_key: lepton-signing.pub
build:
  image: {image}
  base_image: {base_image}
{extra}"""


@dataclass
class ServingBase:
    registry: RegistryServer
    docker: str
    root: Path  # the wine project
    env: dict[str, str]  # signing key, wheel cache, no progress bars
    image: str  # HOST:PORT/team/wine-serve
    full: dict[str, Any]  # image.json of the full build of wine v1
    base_image: str = BASE_IMAGE  # build.base_image for a project that rebuilds on this base

    @property
    def base_tag(self) -> str:
        """`base-<lepton-ci>-sklearn-<hash>`: the serving image without a model, as the full build pushed it."""
        return self.full["base"].rsplit(":", 1)[1]

    @property
    def base_ref(self) -> str:
        """The base pinned by digest, `HOST:PORT/team/wine-serve@sha256:…` (already in the local engine)."""
        digest = self.manifest_digest(REPOSITORY, self.base_tag)
        assert digest, f"{self.image}:{self.base_tag} is not in the registry"
        return f"{self.image}@{digest}"

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        import requests

        url = f"http://{self.registry.host}/v2/{repository}/manifests/{reference}"
        resp = requests.head(url, headers={"Accept": MANIFEST_TYPES}, timeout=10)
        return resp.headers.get("Docker-Content-Digest") if resp.status_code == 200 else None

    def repository(self, name: str) -> str:
        """`HOST:PORT/<name>`, a new repository holding the base under its tag (blobs mounted, no copy)."""
        import requests

        base = f"http://{self.registry.host}/v2"
        got = requests.get(
            f"{base}/{REPOSITORY}/manifests/{self.base_tag}", headers={"Accept": MANIFEST_TYPES}, timeout=10
        )
        assert got.status_code == 200, got.text
        manifest = got.json()
        for desc in [manifest["config"], *manifest["layers"]]:
            mounted = requests.post(
                f"{base}/{name}/blobs/uploads/", params={"mount": desc["digest"], "from": REPOSITORY}, timeout=30
            )
            assert mounted.status_code == 201, (desc, mounted.status_code, mounted.text)
        put = requests.put(
            f"{base}/{name}/manifests/{self.base_tag}",
            data=got.content,
            headers={"Content-Type": got.headers["Content-Type"]},
            timeout=30,
        )
        assert put.status_code == 201, put.text
        return f"{self.registry.host}/{name}"

    def cli(self, *args: str, timeout: float = 1800, env: dict[str, str] | None = None):  # noqa: ANN201
        return cli(*args, cwd=self.root, env={**self.env, **(env or {})}, timeout=timeout)


def tag_version(run_cli: Any, n_estimators: int) -> None:
    """train → gate → tag with the wine project's forest size."""
    for step in (["train", "--param", f"n_estimators={n_estimators}"], ["gate"], ["tag"]):
        r = run_cli(*step, timeout=300)
        assert r.code == 0, (step, r)


def _remove_images(docker: str, host: str) -> None:
    """Every image the session built or pulled from its registry: with the vfs storage driver each layer
    is a full copy of the file system, so they must not pile up between runs."""
    listed = run(docker, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", timeout=60).stdout.split()
    mine = [ref for ref in listed if ref.startswith(f"{host}/")]
    if mine:
        run(docker, "image", "rm", "--force", *mine, timeout=300)
    digests = run(docker, "image", "ls", "--digests", "--format", "{{.Repository}}@{{.Digest}}", timeout=60)
    pulled = [ref for ref in digests.stdout.split() if ref.startswith(f"{host}/") and "@sha256:" in ref]
    if pulled:
        run(docker, "image", "rm", "--force", *pulled, timeout=300)


@pytest.fixture(scope="session")
def serving_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingBase]:
    docker = require_docker()
    base = tmp_path_factory.mktemp("serving-base")
    registry = RegistryServer(base / "registry").start()
    try:
        root = base / "wine"
        root.mkdir()
        (root / "train.py").write_text(TRAIN)
        (root / ".gitignore").write_text(".lepton/\nmetrics.json\nmodel.joblib\n")
        (root / "lepton-signing.pub").write_text(PUBLIC_PEM)
        image = f"{registry.host}/{REPOSITORY}"
        (root / "lepton.yml").write_text(wine_config(image))
        for cmd in (
            ["init", "-q"],
            ["add", "-A"],
            ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "wine"],
        ):
            subprocess.run(["git", *cmd], cwd=root, check=True)
        env = {
            "LEPTON_CI_SIGNING_KEY": PRIVATE_PEM,
            "LEPTON_CI_WHEEL_CACHE": str(wheel_cache()),
            "LEPTON_CI_PROGRESS": "0",
        }
        sb = ServingBase(registry, docker, root, env, image, {})
        tag_version(sb.cli, 800)
        r = sb.cli("build", "--progress", "plain", "--tag", "candidate")
        assert r.code == 0, r
        sb.full = json.loads((root / ".lepton" / "image.json").read_text())
        yield sb
    finally:
        registry.stop()
        _remove_images(docker, registry.host)
