"""A real runner's image: the CI scripts run in a container made from a minimal Python image without git
(`lepton-test/python:3.11`: Debian bookworm minbase with python3 and python3-venv), the way the runners do,
so a system dependency the scripts assume but a minimal image lacks fails here.

- GitLab (Docker executor): the before_script and script of the train, gate, tag and report jobs of
  gitlab-templates/lepton.yml (`extends:` resolved, as GitLab does), run with POSIX sh in a fresh clone of a
  new scikit-learn project (wine data: tests/support/wine_project.py) mounted at /builds/<group>/<project>,
  with the CI variables GitLab sets; each job gets the artifacts and dotenv outputs of the jobs before it and
  the venv cache, like GitLab.
  The clone has .git (the runner's helper image clones), but the job image has no git binary.
- GitHub: the "Install lepton-ci" step of actions/setup/action.yml (bash, like `shell: bash`) with the
  action's source mounted where the runner puts actions, and the variables the runner sets.

pip runs offline inside the containers, from a wheelhouse built on the host (lepton-ci's wheel from this
checkout, its dependencies, scikit-learn) and mounted at /opt/wheels. The engine and the base image come
from scripts/deps/40-docker.sh (missing: skip, but fail under scripts/test or CI=true).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.checkout import ROOT, copy_checkout, git
from tests.support.docker import BASE_IMAGE, build_dist, require_docker, run, wheelhouse
from tests.support.keys import PRIVATE_ONE_LINE
from tests.support.wine_project import CONFIG as WINE_CONFIG
from tests.support.wine_project import write_wine_project

pytestmark = pytest.mark.slow

TEMPLATES = ROOT / "gitlab-templates" / "lepton.yml"
SETUP_ACTION = ROOT / "actions" / "setup" / "action.yml"
GROUP, NAME = "winery", "wine-model"
BUILDS = f"/builds/{GROUP}/{NAME}"


def _version() -> str:
    import re

    found = re.search(r'^__version__ = "([^"]+)"', (ROOT / "lepton_ci" / "__init__.py").read_text(), re.M)
    assert found
    return found[1]


VERSION = _version()


@dataclass
class Lab:
    dir: Path
    docker: str
    src: Path  # a clean copy of this checkout
    wheels: Path  # mounted at /opt/wheels


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    docker = require_docker()
    d = tmp_path_factory.mktemp("runner-images")
    src = copy_checkout(d / "lepton-ci")
    _, wheel = build_dist(src, d / "dist")
    wheels = wheelhouse(d / "wheels", f"lepton-ci[sklearn] @ {wheel.as_uri()}", "setuptools>=61", "wheel")
    return Lab(d, docker, src, wheels)


def container(
    lab: Lab,
    mounts: dict[Path, str],
    workdir: str,
    env: dict[str, str],
    shell: list[str],
    script: str,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """`docker run` as a runner does: host network, the project mounted, the job's variables, one script."""
    cmd: list[str | Path] = [
        lab.docker,
        "run",
        "--rm",
        "--network",
        "host",
        "-w",
        workdir,
        "-v",
        f"{lab.wheels}:/opt/wheels:ro",
    ]
    for host, inside in mounts.items():
        cmd += ["-v", f"{host}:{inside}"]
    for key, value in {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/opt/wheels", **env}.items():
        cmd += ["-e", f"{key}={value}"]
    return run(*cmd, BASE_IMAGE, *shell, script, timeout=timeout)


# ---- GitLab: the templates' job scripts, as the Docker executor runs them ------------------------------------


def resolve(templates: dict[str, Any], name: str) -> dict[str, Any]:
    """A hidden job with its `extends:` chain merged the way GitLab merges it (hashes deep, the rest replaced)."""
    job = templates[name]
    parents = job.get("extends") or []
    merged: dict[str, Any] = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        merged = _merge(merged, resolve(templates, parent))
    return _merge(merged, {k: v for k, v in job.items() if k != "extends"})


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def job_script(job: dict[str, Any]) -> str:
    """before_script + script as one POSIX sh script: each entry echoed, then run; any failure ends the job."""
    lines = ["set -e"]
    for entry in [*(job.get("before_script") or []), *(job.get("script") or [])]:
        first = str(entry).strip().splitlines()[0]
        lines.append(f"echo {_quote('$ ' + first)}")
        lines.append(str(entry))
    return "\n".join(lines) + "\n"


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


def ci_variables(job_name: str, sha: str, job_id: int) -> dict[str, str]:
    """The predefined variables a GitLab runner sets for a branch pipeline (none of which needs git)."""
    return {
        "CI": "true",
        "GITLAB_CI": "true",
        "CI_SERVER": "yes",
        "CI_SERVER_URL": "https://gitlab.example.com",
        "CI_SERVER_HOST": "gitlab.example.com",
        "CI_API_V4_URL": "https://gitlab.example.com/api/v4",
        "CI_PROJECT_DIR": BUILDS,
        "CI_BUILDS_DIR": "/builds",
        "CI_PROJECT_ID": "4242",
        "CI_PROJECT_NAME": NAME,
        "CI_PROJECT_PATH": f"{GROUP}/{NAME}",
        "CI_PROJECT_PATH_SLUG": f"{GROUP}-{NAME}",
        "CI_PROJECT_NAMESPACE": GROUP,
        "CI_PROJECT_URL": f"https://gitlab.example.com/{GROUP}/{NAME}",
        "CI_REPOSITORY_URL": f"https://gitlab-ci-token:job-token@gitlab.example.com/{GROUP}/{NAME}.git",
        "CI_DEFAULT_BRANCH": "main",
        "CI_COMMIT_SHA": sha,
        "CI_COMMIT_SHORT_SHA": sha[:8],
        "CI_COMMIT_BRANCH": "main",
        "CI_COMMIT_REF_NAME": "main",
        "CI_COMMIT_REF_SLUG": "main",
        "CI_COMMIT_BEFORE_SHA": "0" * 40,
        "CI_COMMIT_MESSAGE": "wine model",
        "CI_COMMIT_TITLE": "wine model",
        "CI_PIPELINE_ID": "900",
        "CI_PIPELINE_IID": "9",
        "CI_PIPELINE_SOURCE": "push",
        "CI_PIPELINE_URL": f"https://gitlab.example.com/{GROUP}/{NAME}/-/pipelines/900",
        "CI_JOB_ID": str(job_id),
        "CI_JOB_NAME": job_name,
        "CI_JOB_STAGE": job_name,
        "CI_JOB_URL": f"https://gitlab.example.com/{GROUP}/{NAME}/-/jobs/{job_id}",
        "CI_JOB_TOKEN": "job-token",
        "CI_RUNNER_ID": "1",
        "CI_RUNNER_TAGS": "[]",
        "GITLAB_USER_LOGIN": "winemaker",
    }


@dataclass
class Pipeline:
    jobs: dict[str, subprocess.CompletedProcess[str]]
    workdirs: dict[str, Path]


@pytest.fixture(scope="module")
def gitlab_pipeline(lab: Lab) -> Pipeline:
    templates = yaml.safe_load(TEMPLATES.read_text())
    origin = write_wine_project(lab.dir / "wine-origin")
    git(origin, "init", "-q")
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "wine model")
    sha = git(origin, "rev-parse", "HEAD")

    jobs: dict[str, subprocess.CompletedProcess[str]] = {}
    workdirs: dict[str, Path] = {}
    artifacts = lab.dir / "gitlab-artifacts"  # what earlier jobs uploaded (paths relative to the project)
    artifacts.mkdir()
    cache = lab.dir / "gitlab-cache"  # the runner's cache for key lepton-ci-venv
    cache.mkdir()
    dotenv: dict[str, str] = {}
    for job_id, step in enumerate(["train", "gate", "tag", "report"], start=1):
        job = resolve(templates, f".lepton-{step}")
        work = lab.dir / f"job-{step}"
        # The runner's helper image clones the project (so .git is there), restores cache and artifacts.
        subprocess.run(["git", "clone", "-q", str(origin), str(work)], check=True, timeout=60)
        cache_spec = job.get("cache") or {}
        for rel in cache_spec.get("paths") or []:
            if (cache / rel).exists():
                shutil.copytree(cache / rel, work / rel, symlinks=True, dirs_exist_ok=True)
        shutil.copytree(artifacts, work, symlinks=True, dirs_exist_ok=True)
        env = {
            **ci_variables(step, sha, job_id),
            **{k: str(v) for k, v in (job.get("variables") or {}).items()},
            **dotenv,
            "LEPTON_CI_PACKAGE": f"lepton-ci[sklearn]=={VERSION}",  # the release, served from /opt/wheels
            "LEPTON_CI_SIGNING_KEY": PRIVATE_ONE_LINE,
            "LEPTON_CI_POST": "false",
        }
        proc = container(lab, {work: BUILDS}, BUILDS, env, ["sh", "-c"], job_script(job))
        jobs[step] = proc
        workdirs[step] = work
        (lab.dir / f"job-{step}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            break
        # Upload: artifacts:paths and the dotenv report; save the cache when its policy pushes.
        for rel in (job.get("artifacts") or {}).get("paths") or []:
            src = work / rel
            if src.is_dir():
                shutil.copytree(src, artifacts / rel, symlinks=True, dirs_exist_ok=True)
            elif src.exists():
                (artifacts / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, artifacts / rel)
        report = ((job.get("artifacts") or {}).get("reports") or {}).get("dotenv")
        if report and (work / report).exists():
            for line in (work / report).read_text().splitlines():
                if "=" in line:
                    key, value = line.split("=", 1)
                    dotenv[key] = value
        if cache_spec.get("policy", "pull-push") in ("pull-push", "push"):
            for rel in cache_spec.get("paths") or []:
                if (work / rel).exists():
                    shutil.copytree(work / rel, cache / rel, symlinks=True, dirs_exist_ok=True)
    return Pipeline(jobs, workdirs)


def _job_log(proc: subprocess.CompletedProcess[str]) -> str:
    return (proc.stdout + proc.stderr)[-6000:]


def test_image_has_no_git() -> None:
    """The premise: the image the jobs run in lacks git, like python:3.12-slim."""
    docker = require_docker()
    proc = run(docker, "run", "--rm", "--network", "host", BASE_IMAGE, "sh", "-c", "command -v git || echo none")
    assert proc.stdout.strip() == "none", proc


@pytest.mark.parametrize("step", ["train", "gate", "tag", "report"])
def test_gitlab_job_runs_in_a_minimal_image(gitlab_pipeline: Pipeline, step: str) -> None:
    proc = gitlab_pipeline.jobs.get(step)
    assert proc is not None, f"the {step} job did not run: an earlier job failed ({list(gitlab_pipeline.jobs)})"
    assert proc.returncode == 0, f"{step} job failed in {BASE_IMAGE}:\n{_job_log(proc)}"
    assert "Traceback" not in proc.stderr, _job_log(proc)


def test_gitlab_pipeline_records(gitlab_pipeline: Pipeline) -> None:
    """The jobs did their work: a run record with the commit (from CI variables, without git), a passing
    signed gate, a version in the registry, and a report."""
    import json

    assert gitlab_pipeline.jobs.get("report") is not None and gitlab_pipeline.jobs["report"].returncode == 0
    run_record = json.loads((gitlab_pipeline.workdirs["train"] / ".lepton" / "run.json").read_text())
    sha = git(gitlab_pipeline.workdirs["train"], "rev-parse", "HEAD")
    assert run_record["git"]["sha"] == sha, run_record["git"]
    assert run_record["metrics"]["eval.accuracy"] >= 0.8
    gate = json.loads((gitlab_pipeline.workdirs["gate"] / ".lepton" / "gate.json").read_text())
    assert gate["verdict"] == "pass" and gate.get("signature"), gate
    assert (gitlab_pipeline.workdirs["tag"] / ".lepton" / "version.json").exists()
    assert "wine" in (gitlab_pipeline.workdirs["report"] / ".lepton" / "report.md").read_text()


# ---- GitHub: the setup action's install script on a minimal image ---------------------------------------------


@pytest.fixture(scope="module")
def github_install(lab: Lab) -> Iterator[tuple[subprocess.CompletedProcess[str], Path]]:
    steps = yaml.safe_load(SETUP_ACTION.read_text())["runs"]["steps"]
    install = next(s for s in steps if s.get("name") == "Install lepton-ci")
    assert install.get("shell") == "bash", install
    runner = lab.dir / "github-runner"
    (runner / "temp").mkdir(parents=True)
    (runner / "work").mkdir()
    (runner / "work" / "lepton.yml").write_text(WINE_CONFIG)
    action_root = "/home/runner/work/_actions/lepton/ci/v1"
    env = {
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "RUNNER_TEMP": "/home/runner/work/_temp",
        "GITHUB_WORKSPACE": "/home/runner/work/wine/wine",
        "GITHUB_OUTPUT": "/home/runner/work/_temp/output",
        "GITHUB_PATH": "/home/runner/work/_temp/path",
        "GITHUB_ENV": "/home/runner/work/_temp/env",
        "GITHUB_STEP_SUMMARY": "/home/runner/work/_temp/summary",
        "GITHUB_REPOSITORY": "winery/wine",
        "GITHUB_SHA": "0" * 40,
        "GITHUB_REF": "refs/heads/main",
        "RUNNER_OS": "Linux",
        # The step's env: block, with the inputs a workflow would give.
        "LEPTON_ACTION_PATH": f"{action_root}/actions/setup",
        "LEPTON_VERSION": "",
        "LEPTON_EXTRAS": "sklearn",
        "LEPTON_REQUIREMENTS": "",
        "LEPTON_PYTHON": "python3",
    }
    for key, value in (install.get("env") or {}).items():
        if "${{" not in str(value):
            env.setdefault(key, str(value))
    script = "set -eo pipefail\n" + install["run"]  # GitHub runs `bash --noprofile --norc -eo pipefail {0}`
    mounts = {
        lab.src: action_root,
        runner / "temp": "/home/runner/work/_temp",
        runner / "work": env["GITHUB_WORKSPACE"],
    }
    proc = container(lab, mounts, env["GITHUB_WORKSPACE"], env, ["bash", "--noprofile", "--norc", "-c"], script)
    (lab.dir / "github-install.log").write_text(proc.stdout + proc.stderr)
    yield proc, runner / "temp"


def test_github_install_script_runs_in_a_minimal_image(
    github_install: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    proc, temp = github_install
    assert proc.returncode == 0, f"the setup action's install failed in {BASE_IMAGE}:\n{_job_log(proc)}"
    outputs = dict(line.split("=", 1) for line in (temp / "output").read_text().splitlines() if "=" in line)
    assert outputs.get("lepton-ci-version") == VERSION, outputs
    assert outputs.get("venv", "").startswith("/home/runner/work/_temp/lepton-ci-"), outputs


def test_github_install_puts_lepton_ci_on_the_path(
    github_install: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """The setup action promises `lepton-ci` on PATH for later steps: through $GITHUB_PATH."""
    proc, temp = github_install
    assert proc.returncode == 0, _job_log(proc)
    path_file = temp / "path"
    entries = path_file.read_text().split() if path_file.exists() else []
    assert any(e.endswith("/bin") and "lepton-ci-" in e for e in entries), f"nothing written to GITHUB_PATH: {entries}"
