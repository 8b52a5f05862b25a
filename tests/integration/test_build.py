"""`lepton-ci build` against the real Docker Engine and the real distribution registry.

The session's one full build (tests/support/serving_base.py: a registered, gated and signed random
forest on sklearn's wine data, large enough that the model files dwarf a manifest): labels, user and
health check inspected, the container answering V2 requests (tritonclient) and turning healthy, the push
pulled back by digest, the image record written and attached to the version. Then a model-only rebuild on
top of it (no engine): the bytes pushed against the model files' size, and the same V2 requests answered
the same by both
containers. Then kill -9 at random points of a rebuild: never a half-pushed tag, and a rerun completes.
Then the docker target on the built image: it serves, and an image that keeps the label but swaps the
model file in a later layer (an ungated model that loads and answers) is refused before it starts. Last,
the four bad inputs, each one line and exit 2: a base image that does not exist, a Dockerfile that
fails, an unreachable engine, a registry that refuses the push (nothing pushed).

Services: dockerd and the base image `lepton-test/python:3.11` from scripts/deps/40-docker.sh, the
registry binary from 50-oci-registry.sh.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.helpers import CLI, assert_one_line_error, require
from tests.support.docker import BASE_IMAGE, ROOT, run
from tests.support.oci_registry import RegistryServer, free_port
from tests.support.serving_base import ServingBase, tag_version, wine_config

MODEL = "wine"


@dataclass
class Project:
    """The session's wine project (tests/support/serving_base.py), seen from this module."""

    sb: ServingBase

    @property
    def root(self) -> Path:
        return self.sb.root

    @property
    def env(self) -> dict[str, str]:
        return self.sb.env

    @property
    def image(self) -> str:  # HOST:PORT/REPOSITORY
        return self.sb.image

    @property
    def registry(self) -> RegistryServer:
        return self.sb.registry

    def cli(self, *args: str, timeout: float = 1800, env: dict[str, str] | None = None):  # noqa: ANN201
        return self.sb.cli(*args, timeout=timeout, env=env)

    def tags(self, repository: str = "team/wine-serve") -> list[str]:
        import requests

        resp = requests.get(f"http://{self.registry.host}/v2/{repository}/tags/list", timeout=10)
        return [] if resp.status_code == 404 else sorted(resp.json().get("tags") or [])

    def manifest(self, reference: str, repository: str = "team/wine-serve") -> dict | None:
        import requests

        accept = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
        resp = requests.get(
            f"http://{self.registry.host}/v2/{repository}/manifests/{reference}", headers={"Accept": accept}, timeout=10
        )
        return resp.json() if resp.status_code == 200 else None

    def blob_exists(self, digest: str, repository: str = "team/wine-serve") -> bool:
        import requests

        url = f"http://{self.registry.host}/v2/{repository}/blobs/{digest}"
        return requests.head(url, timeout=10).status_code == 200


@pytest.fixture(scope="module")
def docker(serving_base: ServingBase) -> str:
    return serving_base.docker


@pytest.fixture(scope="module")
def project(serving_base: ServingBase) -> Project:
    return Project(serving_base)


@pytest.fixture(scope="module")
def full(serving_base: ServingBase) -> dict:
    """The full build of v1, pushed (the session's one full build)."""
    return serving_base.full


@pytest.fixture(scope="module")
def rebuilt(project: Project, full: dict) -> dict:
    """A model-only rebuild of v1 on the base the full build pushed (found by its tag: no flag needed)."""
    start = time.monotonic()
    r = project.cli("build", "--progress", "plain", "--output", "rebuilt.json")
    assert r.code == 0, r
    record = json.loads((project.root / "rebuilt.json").read_text())
    record["_seconds"] = time.monotonic() - start
    return record


def _inspect(docker: str, image: str) -> dict:
    proc = run(docker, "image", "inspect", image, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)[0]


def _pull(docker: str, image: str) -> None:
    proc = run(docker, "pull", "-q", image, timeout=600)
    assert proc.returncode == 0, proc.stderr


class Container:
    """The image run on the host network with the server moved to 127.0.0.1:PORT (its CMD, two values changed)."""

    def __init__(self, docker: str, image: str) -> None:
        self.docker, self.port = docker, free_port()
        cmd = list(_inspect(docker, image)["Config"]["Cmd"])
        cmd[cmd.index("--host") + 1] = "127.0.0.1"
        cmd[cmd.index("--port") + 1] = str(self.port)
        proc = run(docker, "run", "-d", "--network", "host", image, *cmd, timeout=120)
        assert proc.returncode == 0, proc.stderr
        self.id = proc.stdout.strip()

    def logs(self) -> str:
        proc = run(self.docker, "logs", self.id, timeout=30)
        return proc.stdout[-2000:] + proc.stderr[-2000:]

    def wait_ready(self, timeout: float = 120) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise AssertionError(f"the container did not become ready: {self.logs()}")

    def health(self) -> str:
        proc = run(self.docker, "inspect", "--format", "{{.State.Health.Status}}", self.id, timeout=30)
        return proc.stdout.strip()

    def stop(self) -> None:
        run(self.docker, "rm", "-f", self.id, timeout=60)


def _answers(port: int, rows: list[list[float]]) -> list:
    """What tritonclient gets for each request: the outputs by name, as lists."""
    import numpy as np

    httpclient = require("tritonclient.http")
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{port}")
    meta = client.get_model_metadata(MODEL)
    inp = meta["inputs"][0]
    answers = []
    for batch in (rows[:1], rows[:7], rows):
        data = np.asarray(batch, dtype=np.float64 if inp["datatype"] == "FP64" else np.float32)
        tensor = httpclient.InferInput(inp["name"], list(data.shape), inp["datatype"])
        tensor.set_data_from_numpy(data, binary_data=False)
        wanted = [httpclient.InferRequestedOutput(o["name"], binary_data=False) for o in meta["outputs"]]
        result = client.infer(MODEL, [tensor], outputs=wanted)
        answers.append({o["name"]: result.as_numpy(o["name"]).tolist() for o in meta["outputs"]})
    return answers


def _rows() -> list[list[float]]:
    from sklearn.datasets import load_wine

    return load_wine().data[:40].tolist()


# -- full build --------------------------------------------------------------------------------------------


def test_full_build_pushes_a_labelled_non_root_image_and_records_it(project: Project, full: dict, docker: str) -> None:
    assert full["kind"] == "image" and full["schema_version"] == 1 and full["mode"] == "full"
    assert full["image"] == f"{project.image}@{full['digest']}" and full["pushed"] is True
    assert full["tags"][0] == "v1" and full["tags"][1].startswith("sha-") and "candidate" in full["tags"]
    assert full["model"]["name"] == MODEL and full["model"]["version"] == 1
    assert full["size_bytes"] > 10_000_000 and full["pushed_bytes"] > 0
    tags = project.tags()
    assert set(tags) >= {"v1", "candidate", full["tags"][1]} and any(t.startswith("base-") for t in tags)
    # Pulled back by digest from the registry (the local tags dropped first).
    for tag in full["tags"]:
        run(docker, "image", "rm", f"{project.image}:{tag}", timeout=120)
    _pull(docker, full["image"])
    info = _inspect(docker, full["image"])
    cfg = info["Config"]
    assert cfg["User"] == "10001:10001"
    assert cfg["Healthcheck"]["Test"] == ["CMD", "python", "-m", "lepton_ci.build.healthcheck"]
    labels = cfg["Labels"]
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project.root, capture_output=True, text=True).stdout.strip()
    assert labels["org.opencontainers.image.revision"] == sha and full["tags"][1] == f"sha-{sha[:12]}"
    assert labels["org.opencontainers.image.version"] == "v1" and labels["org.opencontainers.image.created"]
    assert "org.opencontainers.image.source" in labels
    assert labels["ai.lepton.model.name"] == MODEL and labels["ai.lepton.model.version"] == "1"
    assert labels["ai.lepton.model.digest"] == full["model"]["digest"]
    cmd = cfg["Cmd"]
    assert cmd[:3] == ["python", "-m", "lepton_ci.serve"] and cmd[cmd.index("--port") + 1] == "8080"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0" and cmd[cmd.index("--model-dir") + 1] == "/opt/lepton/model"
    # The image record is attached to the version in the registry (versions themselves are immutable).
    sys.path.insert(0, str(ROOT))
    from lepton_ci.build.attach import attached_images
    from lepton_ci.registry import open_registry

    reg = open_registry(f"file://{project.root / '.lepton' / 'registry'}", project.root)
    assert [r["digest"] for r in attached_images(reg, reg.get(MODEL, 1))][:1] == [full["digest"]]


def test_full_build_serves_v2_and_turns_healthy(full: dict, docker: str) -> None:
    c = Container(docker, full["image"])
    try:
        c.wait_ready()
        answers = _answers(c.port, _rows())
        assert len(answers[2][next(iter(answers[2]))]) == 40
        deadline = time.monotonic() + 60
        while c.health() != "healthy" and time.monotonic() < deadline:
            time.sleep(1)
        assert c.health() == "healthy", c.logs()
        uid = run(docker, "exec", c.id, "id", "-u", timeout=30).stdout.strip()
        assert uid == "10001"
    finally:
        c.stop()


# -- model-only rebuild ------------------------------------------------------------------------------------


def test_model_only_rebuild_pushes_only_the_model_and_answers_the_same(
    project: Project, full: dict, rebuilt: dict, docker: str
) -> None:
    assert rebuilt["mode"] == "model-only" and rebuilt["digest"] != full["digest"]
    assert rebuilt["base"].startswith(f"{project.image}@sha256:")
    model_bytes = (project.root / "model.joblib").stat().st_size
    assert model_bytes > 1_000_000
    # Only the model layer (gzip, so at most its size plus tar headers), the config and the manifest travel.
    assert rebuilt["pushed_bytes"] <= model_bytes * 1.01, (rebuilt["pushed_bytes"], model_bytes)
    manifest = project.manifest(rebuilt["digest"])
    base = project.manifest(rebuilt["base"].split("@")[1])
    assert manifest is not None and base is not None
    assert manifest["layers"][:-1] == base["layers"]
    assert rebuilt["pushed_bytes"] >= manifest["layers"][-1]["size"]
    assert rebuilt["pushed_bytes"] - manifest["layers"][-1]["size"] < 0.01 * model_bytes
    _pull(docker, rebuilt["image"])
    cfg = _inspect(docker, rebuilt["image"])["Config"]
    full_cfg = _inspect(docker, full["image"])["Config"]
    assert cfg["Cmd"] == full_cfg["Cmd"] and cfg["User"] == full_cfg["User"]
    assert cfg["Healthcheck"] == full_cfg["Healthcheck"] and cfg["Env"] == full_cfg["Env"]
    same = {k: v for k, v in full_cfg["Labels"].items() if k != "org.opencontainers.image.created"}
    assert {k: cfg["Labels"][k] for k in same} == same
    a, b = Container(docker, full["image"]), Container(docker, rebuilt["image"])
    try:
        a.wait_ready()
        b.wait_ready()
        rows = _rows()
        assert _answers(a.port, rows) == _answers(b.port, rows)
    finally:
        a.stop()
        b.stop()


def test_kill_during_a_rebuild_never_leaves_a_half_pushed_tag(project: Project, rebuilt: dict) -> None:
    tag_version(project.cli, 801)  # v2
    rng = random.Random(int(os.environ.get("LEPTON_TEST_SEED", "14")))
    span = max(1.0, rebuilt["_seconds"])
    for _ in range(5):
        proc = subprocess.Popen(
            [*CLI, "build", "--progress", "quiet", "--output", "killed.json"],
            cwd=project.root,
            env={**os.environ, **project.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.05, span))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for tag in ("v2", *[t for t in project.tags() if t.startswith("sha-")]):
            manifest = project.manifest(tag)
            if manifest is None:
                continue
            # A tag that exists names a complete image: its config and every layer are there.
            for desc in [manifest["config"], *manifest["layers"]]:
                assert project.blob_exists(desc["digest"]), (tag, desc)
    r = project.cli("build", "--progress", "plain", "--output", "v2.json")
    assert r.code == 0, r
    record = json.loads((project.root / "v2.json").read_text())
    assert record["mode"] == "model-only" and record["model"]["version"] == 2
    manifest = project.manifest("v2")
    assert manifest is not None and project.manifest(record["digest"]) == manifest


# -- the docker target on a built image ---------------------------------------------------------------------


def _docker_deploy_config(project: Project, where: Path, image: str) -> Path:
    """The wine project's versions deployed by the docker target from `image`, from a directory of its own
    (no image.json there, so deploy.image is what runs)."""
    name, port = f"lepton-b{free_port()}", free_port()
    cfg = _variant(project, "deploy", project.image)
    text = cfg.read_text() + (
        f"deploy:\n  target: docker\n  image: {image}\n  ready_timeout: 120\n  server:\n    workers: 1\n"
        f"  docker:\n    name: {name}\n    port: {port}\n"
    )
    cfg.unlink()
    where.mkdir(parents=True, exist_ok=True)
    (where / "lepton.yml").write_text(text)
    return where / "lepton.yml"


def test_the_docker_target_runs_the_built_image_and_refuses_one_whose_files_are_not_the_versions(
    project: Project, full: dict, docker: str, tmp_path: Path
) -> None:
    """The image's label names the model it claims to hold; a later layer that swaps the model file keeps
    that label. The target reads the files back from the container and refuses what the gate did not sign."""
    import requests

    _pull(docker, full["image"])
    ctx = tmp_path / "forged"
    ctx.mkdir()
    # A model that loads and answers as well as the gated one does, but that the gate never saw.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import joblib, sys; from sklearn.datasets import load_wine;"
            " from sklearn.tree import DecisionTreeClassifier; x, y = load_wine(return_X_y=True);"
            " joblib.dump(DecisionTreeClassifier().fit(x, y), sys.argv[1])",
            str(ctx / "model.joblib"),
        ],
        check=True,
        timeout=120,
    )
    (ctx / "Dockerfile").write_text(f"FROM {full['image']}\nCOPY model.joblib /opt/lepton/model/model.joblib\n")
    forged_tag = f"{project.image}:forged"
    built = run(docker, "build", "-q", "-t", forged_tag, str(ctx), env={"DOCKER_BUILDKIT": "0"}, timeout=600)
    assert built.returncode == 0, built.stderr
    pushed = run(docker, "push", forged_tag, timeout=600)
    assert pushed.returncode == 0, pushed.stderr
    digest = requests.head(
        f"http://{project.registry.host}/v2/team/wine-serve/manifests/forged",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        timeout=10,
    ).headers["Docker-Content-Digest"]
    forged = f"{project.image}@{digest}"
    assert _inspect(docker, forged)["Config"]["Labels"]["ai.lepton.model.digest"] == full["model"]["digest"]

    good = _docker_deploy_config(project, tmp_path / "good", full["image"])
    r = project.cli("-c", str(good), "deploy", "--version", "1", timeout=600)
    try:
        assert r.code == 0, r
        record = json.loads((good.parent / ".lepton" / "deployment.json").read_text())
        assert record["status"] == "healthy" and record["state"]["model_source"] == "image", record
        endpoint = record["endpoint"]
        assert requests.get(f"{endpoint}/v2/models/{MODEL}/ready", timeout=10).status_code == 200

        bad = good.parent / "lepton.yml"
        bad.write_text(bad.read_text().replace(full["image"], forged))
        r = project.cli("-c", str(bad), "deploy", "--version", "1", timeout=600)
        assert_one_line_error(r, 2, "refusing to deploy wine v1", "does not hold the version's files", "model.joblib")
        # Nothing of the forged image runs, and the genuine deployment still serves.
        running = run(docker, "ps", "-a", "--filter", f"ancestor={forged}", "--format", "{{.Names}}", timeout=60)
        assert running.stdout.strip() == "", running.stdout
        assert json.loads((good.parent / ".lepton" / "deployment.json").read_text())["digest"] == record["digest"]
        assert requests.get(f"{endpoint}/v2/models/{MODEL}/ready", timeout=10).status_code == 200
    finally:
        stopped = project.cli("-c", str(good), "deploy", "stop", timeout=300)
        assert stopped.code == 0, stopped


# -- bad input -----------------------------------------------------------------------------------------------


def _variant(project: Project, name: str, image: str, **build: str) -> Path:
    """A copy of the project's config (same registry of versions) with other build settings."""
    cfg = project.root / f"lepton.{name}.yml"
    text = wine_config(image, **build).replace(
        "file://.lepton/registry", f"file://{project.root / '.lepton' / 'registry'}"
    )
    cfg.write_text(text.replace("lepton-signing.pub", str(project.root / "lepton-signing.pub")))
    return cfg


def test_a_base_image_that_does_not_exist_is_one_line(project: Project) -> None:
    cfg = _variant(project, "nobase", project.image, base_image="lepton-test/no-such-image:1")
    r = project.cli("-c", str(cfg), "build", "--no-push", "--version", "1", timeout=300)
    assert_one_line_error(r, 2, "build.base_image", "lepton-test/no-such-image:1", "does not exist")


def test_a_dockerfile_that_fails_is_one_line_after_its_last_lines(project: Project, docker: str) -> None:
    (project.root / "Dockerfile.bad").write_text(f"FROM {BASE_IMAGE}\nRUN echo boom-before-failing && exit 3\n")
    cfg = _variant(project, "baddockerfile", project.image, dockerfile=str(project.root / "Dockerfile.bad"))
    r = project.cli("-c", str(cfg), "build", "--no-push", "--version", "1", "--progress", "quiet", timeout=900)
    assert_one_line_error(r, 2, "Dockerfile.bad", "the image build failed")
    assert "boom-before-failing" in r.err  # the last lines of the build, shown before the error


def test_an_unreachable_docker_host_is_one_line(project: Project, tmp_path: Path) -> None:
    cfg = _variant(project, "nodocker", project.image)
    r = project.cli(
        "-c", str(cfg), "build", "--no-push", "--version", "1", env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"}
    )
    assert_one_line_error(r, 2, "cannot reach the Docker Engine", "none.sock")


class ReadOnlyRegistry(RegistryServer):
    """A registry in read-only maintenance mode: it answers reads and refuses every upload."""

    def config(self) -> str:
        readonly = "  maintenance:\n    readonly:\n      enabled: true\n"
        return super().config().replace("  delete:\n", readonly + "  delete:\n")


def test_a_registry_that_refuses_the_push_is_one_line_and_nothing_is_pushed(
    project: Project, tmp_path: Path, full: dict
) -> None:
    with ReadOnlyRegistry(tmp_path / "ro") as ro:
        cfg = _variant(project, "refused", f"{ro.host}/team/wine-serve")
        r = project.cli("-c", str(cfg), "build", "--version", "1", "--progress", "quiet")
        assert_one_line_error(r, 2, "refused the push", f"{ro.host}/team/wine-serve")
        import requests

        resp = requests.get(f"http://{ro.host}/v2/team/wine-serve/tags/list", timeout=10)
        assert resp.status_code == 404 or not resp.json().get("tags")
