"""The release pipelines: .github/workflows/release.yml run for real in act, and both release files linted.

act runs the workflow (`act push` with a `refs/tags/vX.Y.Z` event, host mode) as a dry run
(LEPTON_RELEASE_DRY_RUN=true) on a tagged copy of this checkout: the sdist and wheel are built and pass
`twine check`, the lepton-ci image is built on the real Docker engine (on `lepton-test/python:3.11`) and
runs git and lepton-ci, and scripts/release moves the major tag and writes the split action repositories
locally; PyPI publishing, the image push and every push to GitHub are skipped. The actions GitHub would
fetch are local stand-ins (act's `--local-repository`): upload/download-artifact pass the distributions
between jobs through a directory, and the PyPI publish stand-in records a call (there must be none).
pip installs run offline from a wheelhouse built on the host.

act, actionlint, zizmor and check-jsonschema come from scripts/deps/20-github-actions.sh; the Docker engine
and the base image from scripts/deps/40-docker.sh.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.checkout import ROOT, copy_checkout, git, host_job_env
from tests.support.docker import BASE_IMAGE, remove_image, require_docker, run, wheelhouse
from tests.support.tools import github_actions_tool

WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
GITLAB_CI = ROOT / ".gitlab-ci.yml"
TOKEN = "ghs_release_canary_0123456789abcdef"  # never in a log
RELEASE_TOKEN = "github_pat_release_canary_0123456789"
OWNER = "lepton"
# Same policy as tests/unit/test_action_lint.py: everything third-party is pinned by commit SHA.
ZIZMOR_CONFIG = (
    'rules:\n  unpinned-uses:\n    config:\n      policies:\n        "lepton/*": ref-pin\n        "*": hash-pin\n'
)
PASSTHROUGH = re.compile(r"^(HOME|LANG|LC_\w+|TMPDIR|USER|\w*CA_BUNDLE|\w*CA_CERTS\w*|SSL_CERT_\w+)$")

UPLOAD = """\
name: upload-artifact stand-in
description: Keeps the files of `path` as the artifact `name` in $LEPTON_STANDIN_DIR/artifacts.
inputs:
  name: {description: artifact name, required: false, default: artifact}
  path: {description: files to keep, required: true}
  if-no-files-found: {description: warn or error, required: false, default: warn}
runs:
  using: composite
  steps:
    - shell: bash
      env: {NAME: "${{ inputs.name }}", SRC: "${{ inputs.path }}"}
      run: |
        set -euo pipefail
        dest="$LEPTON_STANDIN_DIR/artifacts/$NAME"
        [ ! -e "$dest" ] || { echo "stand-in: artifact $NAME uploaded twice"; exit 1; }
        [ -n "$(ls -A "$SRC")" ] || { echo "stand-in: no files in $SRC"; exit 1; }
        mkdir -p "$dest" && cp -R "$SRC"/. "$dest"/
        echo "stand-in upload-artifact $NAME: $(ls "$dest" | tr '\\n' ' ')"
"""
DOWNLOAD = """\
name: download-artifact stand-in
description: Copies the artifact `name` from $LEPTON_STANDIN_DIR/artifacts into `path`.
inputs:
  name: {description: artifact name, required: true}
  path: {description: destination, required: false, default: "."}
runs:
  using: composite
  steps:
    - shell: bash
      env: {NAME: "${{ inputs.name }}", DEST: "${{ inputs.path }}"}
      run: |
        set -euo pipefail
        src="$LEPTON_STANDIN_DIR/artifacts/$NAME"
        [ -d "$src" ] || { echo "stand-in: no artifact $NAME"; exit 1; }
        mkdir -p "$DEST" && cp -R "$src"/. "$DEST"/
        echo "stand-in download-artifact $NAME: $(ls "$DEST" | tr '\\n' ' ')"
"""
PYPI = """\
name: pypi-publish stand-in
description: Records that a publish was attempted, with the files it would upload.
inputs:
  packages-dir: {description: distributions, required: false, default: dist}
runs:
  using: composite
  steps:
    - shell: bash
      env: {DIST: "${{ inputs.packages-dir }}"}
      run: ls "$DIST" >> "$LEPTON_STANDIN_DIR/pypi-published"
"""


def _uses(workflow: Path) -> dict[str, str]:
    """owner/repo@sha → which stand-in, for every third-party action the workflow uses (but checkout,
    which act serves from the working copy itself)."""
    standins = {
        "actions/upload-artifact": "upload",
        "actions/download-artifact": "download",
        "pypa/gh-action-pypi-publish": "pypi",
    }
    found: dict[str, str] = {}
    for job in yaml.safe_load(workflow.read_text())["jobs"].values():
        for step in job["steps"]:
            uses = step.get("uses")
            if not uses or uses.startswith("actions/checkout@"):
                continue
            repo = uses.split("@")[0]
            assert repo in standins, f"no stand-in for {uses}: add one to this test"
            found[uses] = standins[repo]
    return found


def _version() -> str:
    found = re.search(r'^__version__ = "([^"]+)"', (ROOT / "lepton_ci" / "__init__.py").read_text(), re.M)
    assert found
    return found[1]


VERSION = _version()
IMAGE = f"ghcr.io/{OWNER}/lepton-ci"
IMAGE_TAGS = [f"{IMAGE}:{VERSION}", f"{IMAGE}:{VERSION.rsplit('.', 1)[0]}", f"{IMAGE}:{VERSION.split('.')[0]}"]


# ---- linters --------------------------------------------------------------------------------------------


def test_release_workflow_passes_actionlint(tmp_path: Path) -> None:
    actionlint = github_actions_tool("actionlint")
    shellcheck = github_actions_tool("shellcheck")
    proc = run(actionlint, "-shellcheck", shellcheck, "-format", "{{json .}}", WORKFLOW, cwd=ROOT, timeout=120)
    findings = json.loads(proc.stdout or "[]")
    assert findings == [] and proc.returncode == 0, [f"{f['line']}: {f['message']}" for f in findings] or proc.stderr


def test_release_workflow_passes_zizmor_pedantic(tmp_path: Path) -> None:
    zizmor = github_actions_tool("zizmor")
    config = tmp_path / "zizmor.yml"
    config.write_text(ZIZMOR_CONFIG)
    args: list[str | Path] = ["--offline", "--persona", "pedantic", "--config", config]
    proc = run(zizmor, *args, "--format", "json", WORKFLOW, cwd=ROOT, timeout=120)
    findings = [f for f in json.loads(proc.stdout or "[]") if not f.get("ignored")]
    assert findings == [] and proc.returncode == 0, run(zizmor, *args, WORKFLOW, cwd=ROOT, timeout=120).stdout


@pytest.mark.parametrize(
    ("schema", "path"),
    [("vendor.github-workflows", WORKFLOW), ("vendor.gitlab-ci", GITLAB_CI)],
    ids=["release.yml", ".gitlab-ci.yml"],
)
def test_release_files_match_their_schemas(schema: str, path: Path) -> None:
    check = github_actions_tool("check-jsonschema")
    proc = run(check, "--builtin-schema", schema, path, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_release_workflow_publishes_only_outside_a_dry_run() -> None:
    """Every step that publishes is skipped in a dry run; every third-party action is pinned by SHA; only
    the PyPI job can mint an OIDC token."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow["permissions"] == {}
    assert workflow[True]["push"]["tags"] == ["v*.*.*"]  # `on:` reads as True in YAML 1.1
    publishing = {"Publish to PyPI", "Push the image"}
    seen = set()
    for name, job in workflow["jobs"].items():
        assert ("id-token" in job["permissions"]) == (name == "pypi"), name
        for step in job["steps"]:
            if step.get("name") in publishing:
                seen.add(step["name"])
                assert step["if"] == "env.LEPTON_RELEASE_DRY_RUN != 'true'", step
            uses = step.get("uses")
            if uses:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", uses), uses
    assert seen == publishing
    # scripts/release pushes only outside a dry run.
    script = workflow["jobs"]["actions"]["steps"][-1]["run"]
    assert re.search(r'if \[ "\$LEPTON_RELEASE_DRY_RUN" != true \]; then.*--push', script, re.S)


# ---- the workflow in act ----------------------------------------------------------------------------------


@dataclass
class Release:
    code: int
    log: str
    seconds: float
    standins: Path

    def __repr__(self) -> str:
        return f"Release(code={self.code}, {self.seconds:.0f}s, log=...{self.log[-10000:]})"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    act = github_actions_tool("act")
    docker = require_docker()
    d = tmp_path_factory.mktemp("release-workflow")
    src = copy_checkout(d / "ci")
    git(src, "init", "-q")
    git(src, "remote", "add", "origin", f"https://github.com/{OWNER}/ci.git")  # act's github.repository
    git(src, "add", "-A")
    git(src, "commit", "-q", "-m", f"lepton-ci {VERSION}")
    git(src, "tag", "-a", f"v{VERSION}", "-m", f"lepton-ci {VERSION}")
    sha = git(src, "rev-parse", "HEAD")

    # Everything pip needs in the jobs, offline: build, twine, the build backend, lepton-ci's dependencies.
    wheels = wheelhouse(d / "wheels", str(src), "build", "twine", "setuptools>=61", "wheel")
    for built in wheels.glob("lepton_ci-*.whl"):
        built.unlink()  # the jobs build lepton-ci themselves

    standins = d / "standins"
    repos = []
    for uses, kind in _uses(WORKFLOW).items():
        action = d / "actions" / uses.replace("/", "_").replace("@", "_")
        action.mkdir(parents=True)
        (action / "action.yml").write_text({"upload": UPLOAD, "download": DOWNLOAD, "pypi": PYPI}[kind])
        repos += ["--local-repository", f"{uses}={action}"]
    standins.mkdir()

    event = d / "event.json"
    repo = {"full_name": f"{OWNER}/ci", "name": "ci", "owner": {"login": OWNER}, "default_branch": "main"}
    event.write_text(
        json.dumps(
            {
                "ref": f"refs/tags/v{VERSION}",
                "before": "0" * 40,
                "after": sha,
                "head_commit": {"id": sha},
                "repository": repo,
            }
        )
    )
    env = {
        "LEPTON_STANDIN_DIR": str(standins),
        "DOCKER_HOST": os.environ["DOCKER_HOST"],
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheels),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    cmd = [
        act,
        "push",
        "-e",
        str(event),
        "-W",
        str(src / ".github" / "workflows" / "release.yml"),
        "-P",
        "ubuntu-latest=-self-hosted",
        "--no-cache-server",
        "--action-cache-path",
        str(d / "act-cache"),
        "--var",
        "LEPTON_RELEASE_DRY_RUN=true",
        "--var",
        f"LEPTON_IMAGE_BASE={BASE_IMAGE}",
        "-s",
        f"GITHUB_TOKEN={TOKEN}",
        "-s",
        f"LEPTON_RELEASE_TOKEN={RELEASE_TOKEN}",
        *repos,
    ]
    for key, value in env.items():
        cmd += ["--env", f"{key}={value}"]
    run_env = host_job_env(PASSTHROUGH)  # jobs use the system python3 (like a runner's), not this venv
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=src, env=run_env, capture_output=True, text=True, timeout=900)
        code, log = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        code = 124
        log = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
    (d / "act.log").write_text(log)
    try:
        yield Release(code, log, time.monotonic() - start, standins)
    finally:
        for tag in IMAGE_TAGS:
            remove_image(docker, tag)


def step_lines(log: str, job: str) -> list[str]:
    """The output lines of one job's steps (act prints them as `[release/<job name>]   | ...`)."""
    lines = re.finditer(r"^\[release/([^\]]*)\]\s+\| (.*)$", log, re.M)
    return [m.group(2) for m in lines if m.group(1).rstrip() == job]


def ran(log: str, step: str) -> bool:
    return re.search(rf"⭐ Run Main {re.escape(step)}$", log, re.M) is not None


@pytest.mark.slow
def test_release_dry_run_in_act(release: Release) -> None:
    assert release.code == 0, release
    for job in (
        "build and check the distributions",
        "publish to PyPI",
        "build and push the lepton-ci image",
        "move the major tag and publish the split actions",
    ):
        assert re.search(rf"^\[release/{re.escape(job)} *\].*🏁  Job succeeded$", release.log, re.M), (job, release)
    assert "Job failed" not in release.log, release
    assert TOKEN not in release.log and RELEASE_TOKEN not in release.log, "a token leaked into the log"


@pytest.mark.slow
def test_dry_run_builds_and_checks_the_distributions(release: Release) -> None:
    assert ran(release.log, "Build the sdist and the wheel") and ran(release.log, "Check the distributions"), release
    out = step_lines(release.log, "build and check the distributions")
    assert f"release {VERSION} (dry run: true)" in out, release
    passed = [line for line in out if "PASSED" in line]
    assert len(passed) == 2 and any(".whl" in p for p in passed) and any(".tar.gz" in p for p in passed), out
    # The stand-in artifact store got both distributions, and the later jobs got them from it.
    dist = sorted(p.name for p in (release.standins / "artifacts" / "dist").iterdir())
    assert dist == [f"lepton_ci-{VERSION}-py3-none-any.whl", f"lepton_ci-{VERSION}.tar.gz"]


@pytest.mark.slow
def test_dry_run_builds_the_image_and_does_not_push_it(release: Release) -> None:
    assert ran(release.log, "Build the image"), release
    out = step_lines(release.log, "build and push the lepton-ci image")
    assert any(line.startswith("git version ") for line in out), out
    assert f"lepton-ci {VERSION}" in " ".join(out), out
    docker = require_docker()
    for tag in IMAGE_TAGS:
        assert run(docker, "image", "inspect", tag, timeout=30).returncode == 0, f"{tag} was not built"
    assert not ran(release.log, "Push the image"), "the image was pushed in a dry run"
    assert "docker login" not in release.log and "Login Succeeded" not in release.log


@pytest.mark.slow
def test_dry_run_publishes_nothing_to_pypi(release: Release) -> None:
    assert not ran(release.log, "Publish to PyPI"), "the PyPI publish step ran in a dry run"
    assert not (release.standins / "pypi-published").exists(), "the PyPI publish stand-in was called"


@pytest.mark.slow
def test_dry_run_runs_scripts_release_without_pushing(release: Release) -> None:
    assert ran(release.log, "Release the actions"), release
    out = step_lines(release.log, "move the major tag and publish the split actions")
    major = f"v{VERSION.split('.')[0]}"
    for step in ("setup", "train", "gate", "tag", "build", "deploy", "report", "sweep"):
        line = next((x for x in out if x.startswith(f"{step}: ")), "")
        assert f"v{VERSION}" in line.split() and major in line.split(), (step, out)
    assert not re.search(r"git push|--push", "\n".join(out)), out
