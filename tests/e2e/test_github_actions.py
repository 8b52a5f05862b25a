"""GitHub Actions for real: act runs the workflows of docs/github-actions.md (tests/e2e/workflows/) in host
mode on a copy of examples/sklearn-digits (or a new wine project, tests/support/wine_project.py), against the
GitHub API stand-in (tests/support/github_standin.py), which checks every request against GitHub's OpenAPI
description.

- the step actions (`lepton/ci/actions/<step>@v1`): train, gate, tag, deploy (local), report; run twice,
  as a rerun of the same pull request (one sticky comment created, then updated in place), then once more
  after a push that fails the gate (the job fails, the report still updates the comment);
- the umbrella action (`lepton/ci@v1`, `step: run`) on another pull request;
- the act command line of docs/github-actions.md as printed, with docs/examples/github/pull_request.json,
  on the new wine project (not the shipped example) with the quick start as its workflow;
- the GHCR workflow (lepton-oci.yml) as printed in the docs but for the registry's host: a real CNCF
  distribution server on loopback with htpasswd auth (tests/support/oci_registry.py), two pushes to one
  pull request, the second gated against the `production` the first deployed; its build action makes a
  model-only rebuild (no Docker Engine in the job) on the session's serving base image
  (tests/support/serving_base.py) and pushes it to that base's registry;
- settings precedence (tests/e2e/workflows/checks/settings.yml): a job-level LEPTON_CI_REGISTRY and
  LEPTON_CI_CONFIG reach every action given no input, a non-empty input wins; `lepton-ci` is on PATH for
  plain `run:` steps; the gate's outputs name its baseline;
- fail closed (checks/fail-closed.yml): an unreadable registry, as an input or as the job's env, fails the
  gate and the job;
- scripts/release: the major tag moves, and the split repositories (`lepton/<step>@vN`) work standalone,
  installing the lepton-ci source each one carries (nothing from PyPI).

act resolves `lepton/ci@v1` to a copy of this checkout (`--local-repository`) and intercepts
`actions/checkout` (it copies the project). act, actionlint and zizmor come from
scripts/deps/20-github-actions.sh.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.support.checkout import ROOT, copy_checkout, git, host_job_env
from tests.support.docker import wheelhouse
from tests.support.keys import PRIVATE_ONE_LINE, commit_public_key
from tests.support.oci_registry import PASSWORD as REGISTRY_PASSWORD
from tests.support.oci_registry import USER as REGISTRY_USER
from tests.support.oci_registry import RegistryServer
from tests.support.tools import github_actions_tool
from tests.support.wine_project import write_wine_project

pytestmark = pytest.mark.slow

EXAMPLE = ROOT / "examples" / "sklearn-digits"
WORKFLOWS = Path(__file__).resolve().parent / "workflows"
DOCS = ROOT / "docs" / "github-actions.md"
EXAMPLE_EVENT = ROOT / "docs" / "examples" / "github" / "pull_request.json"
REPO = "octo/digits"
STICKY = "<!-- lepton-ci:sticky model=digits workflow=lepton -->"
STICKY_PIPELINE = "<!-- lepton-ci:sticky model=digits workflow=lepton-pipeline -->"
STICKY_OCI = "<!-- lepton-ci:sticky model=digits workflow=lepton-oci -->"
STICKY_WINE = "<!-- lepton-ci:sticky model=wine workflow=lepton -->"
DOC_PR = 1  # the pull request number of docs/examples/github/pull_request.json
OCI_PR = 9
TOKEN = "ghs_" + secrets.token_hex(18)  # a canary: must never show in any log
SIGNING_KEY = PRIVATE_ONE_LINE
ACT_FLAGS = ["-P", "self-hosted=-self-hosted", "-P", "gpu=-self-hosted", "-P", "ubuntu-latest=-self-hosted"]
# The environment act hands on to steps in host mode: enough for git, pip and Python, nothing of the
# machine's own CI (a GITHUB_* leaking in would change what lepton-ci detects).
PASSTHROUGH = re.compile(
    r"^(HOME|LANG|LC_\w+|TMPDIR|USER|PIP_\w+|\w*CA_BUNDLE|\w*CA_CERTS\w*|SSL_CERT_\w+|"
    r"https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY)$"
)


tool = github_actions_tool


class StandIn:
    """The GitHub API stand-in as its own process (act's steps reach it over HTTP)."""

    def __init__(self, workdir: Path, prs: list[int]) -> None:
        from tests.support.github_standin import require_spec

        self.state = workdir / "github-standin.jsonl"
        self.log = open(workdir / "github-standin.log", "w+b")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.github_standin",
                "--spec",
                str(require_spec()),
                "--port",
                "0",
                "--state",
                str(self.state),
                "--repo",
                REPO,
                "--token",
                TOKEN,
                "--token",  # what the lepton-oci run gives act as GITHUB_TOKEN: the registry's password
                REGISTRY_PASSWORD,
                "--prs",
                ",".join(map(str, prs)),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline().strip()  # the URL, once it listens (loading the spec takes a while)
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(
                f"GitHub stand-in did not start: {line!r} {(workdir / 'github-standin.log').read_text()[-2000:]}"
            )
        self.url = line

    def _get(self, what: str) -> Any:
        with urllib.request.urlopen(f"{self.url}/_standin/{what}", timeout=10) as resp:
            return json.loads(resp.read())

    def requests(self) -> list[dict[str, Any]]:
        return self._get("requests")

    def violations(self) -> list[str]:
        return self._get("violations")

    def comments(self, pr: int) -> list[dict[str, Any]]:
        return self._get(f"comments?issue={pr}")

    def calls(self, op: str, pr: int | None = None) -> list[dict[str, Any]]:
        out = [r for r in self.requests() if r.get("operation") == op]
        if pr is not None:
            out = [r for r in out if f"/issues/{pr}/" in r["route"] or op == "issues/update-comment"]
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()


@dataclass
class Lab:
    dir: Path
    src: Path  # what `lepton/ci@v1` resolves to
    standin: StandIn
    act: str
    wheels: Path  # lepton-ci's dependencies and build backend: the actions' pip installs run offline from it


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    act = tool("act")
    if not shutil.which("git"):
        pytest.fail("git is needed to run act")
    d = tmp_path_factory.mktemp("github-actions")
    src = copy_checkout(d / "lepton-ci")
    wheels = wheelhouse(d / "wheels", f"{src}[sklearn,serve,docker]", "setuptools>=61", "wheel")
    for built in wheels.glob("lepton_ci-*.whl"):
        built.unlink()  # the actions install lepton-ci itself from their own source (or the split test's wheel)
    standin = StandIn(d, prs=[DOC_PR, 7, 8, OCI_PR])
    try:
        yield Lab(d, src, standin, act, wheels)
    finally:
        standin.stop()


@pytest.fixture(autouse=True)
def _no_contract_violations(lab: Lab) -> Iterator[None]:
    yield
    assert lab.standin.violations() == [], "requests that broke GitHub's API contract"


def make_project(lab: Lab, name: str, *, wine: bool = False) -> tuple[Path, str]:
    """A copy of the example (or, with `wine`, the new wine project of tests/support/wine_project.py) in a git
    repository whose origin is github.com/octo/digits; returns (repo, sha)."""
    repo = lab.dir / name
    if wine:
        write_wine_project(repo)
    else:
        repo.mkdir()
        for f in ("lepton.yml", "train.py", ".gitignore"):
            shutil.copy2(EXAMPLE / f, repo / f)
        commit_public_key(repo)
    git(repo, "init", "-q", "-b", "smaller-c")
    git(repo, "remote", "add", "origin", f"https://github.com/{REPO}.git")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"{'wine' if wine else 'digits'} model ({name})")  # one commit sha per project
    return repo, git(repo, "rev-parse", "HEAD")


def pull_request_event(path: Path, pr: int, sha: str) -> Path:
    repo = {"full_name": REPO, "name": "digits", "owner": {"login": "octo"}}
    path.write_text(
        json.dumps(
            {
                "action": "synchronize",
                "number": pr,
                "pull_request": {
                    "number": pr,
                    "head": {"sha": sha, "ref": "smaller-c", "repo": repo},
                    "base": {"sha": sha, "ref": "main", "repo": repo},
                },
                "repository": repo,
            }
        )
    )
    return path


@dataclass
class ActRun:
    code: int
    log: str
    seconds: float
    cache: Path  # act's host workspaces: it removes a job's when the job succeeds

    def __repr__(self) -> str:
        return f"ActRun(code={self.code}, {self.seconds:.0f}s, log=...{self.log[-8000:]})"


def run_act(
    lab: Lab,
    project: Path,
    workflow: Path,
    event: Path,
    repos: dict[str, Path],
    name: str,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    extra: list[str] | None = None,
    token: str = TOKEN,
) -> ActRun:
    """`act pull_request` in host mode, in `project`, with lepton's actions served from local directories."""
    cmd = [
        lab.act,
        "pull_request",
        "-e",
        str(event),
        "-W",
        str(workflow),
        *ACT_FLAGS,
        "-s",
        f"GITHUB_TOKEN={token}",
        "-s",
        f"LEPTON_CI_SIGNING_KEY={SIGNING_KEY}",
        "--env",
        f"GITHUB_API_URL={lab.standin.url}",
        *(extra or []),
    ]
    for ref, path in repos.items():
        cmd += ["--local-repository", f"{ref}={path}"]
    return act_command(lab, project, cmd, name, env, timeout)


def act_command(
    lab: Lab, project: Path, cmd: list[str], name: str, env: dict[str, str] | None = None, timeout: float = 300
) -> ActRun:
    """Run an act command line in `project`, adding only what keeps it hermetic: its own action cache, and
    pip installs from the wheelhouse (offline, faster too)."""
    cache = lab.dir / f"act-{name}"
    cmd = [*cmd, "--action-cache-path", str(cache), "--no-cache-server"]
    for key, value in {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(lab.wheels), **(env or {})}.items():
        cmd += ["--env", f"{key}={value}"]
    # The actions make their venv with `python3` from PATH: the system one, not this test's venv.
    run_env = host_job_env(PASSTHROUGH)
    for key in ("no_proxy", "NO_PROXY"):
        run_env[key] = ",".join(filter(None, [run_env.get(key), "127.0.0.1", "localhost"]))
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=project, env=run_env, capture_output=True, text=True, timeout=timeout)
        code, log = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, log = 124, (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
    finally:
        stop_servers(cache)
    (lab.dir / f"act-{name}.log").write_text(log)
    return ActRun(code, log, time.monotonic() - start, cache)


def stop_servers(cache: Path) -> list[int]:
    """Model servers a failed run left behind (the workflows stop theirs): terminate them by pid."""
    stopped = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "lepton_ci.serve" in cmdline and str(cache) in cmdline:
            try:
                os.kill(int(proc.name), signal.SIGTERM)
                stopped.append(int(proc.name))
            except ProcessLookupError:
                pass
    return stopped


def step_lines(log: str, prefix: str) -> list[str]:
    """Output lines of the job's steps that start with `prefix` (act prints them as `[wf/job]   | ...`)."""
    return [
        m.group(1) for m in re.finditer(r"^\[[^\]]*\]\s+\| (.*)$", log, flags=re.M) if m.group(1).startswith(prefix)
    ]


def summaries(log: str) -> str:
    """What the steps wrote to $GITHUB_STEP_SUMMARY: act echoes it as `⚙  Summary - ...` after each step."""
    out = []
    for m in re.finditer(r"^\[[^\]]*\]\s+⚙\s+Summary - (.*?)(?=^\[[^\]]*\] )", log, flags=re.M | re.S):
        out.append(m.group(1))
    return "\n".join(out)


def assert_succeeded(run: ActRun) -> None:
    assert run.code == 0 and "🏁  Job succeeded" in run.log, run
    assert "Job failed" not in run.log, run
    assert TOKEN not in run.log, "the token leaked into the job log"
    assert SIGNING_KEY not in run.log, "the signing key leaked into the job log"


def test_step_actions_pull_request_workflow_and_rerun(lab: Lab) -> None:
    """docs/github-actions.md's workflow: five step actions, one sticky comment, updated on a rerun."""
    project, sha = make_project(lab, "steps")
    event = pull_request_event(lab.dir / "event-7.json", 7, sha)
    workflow = WORKFLOWS / "lepton.yml"
    repos = {"lepton/ci@v1": lab.src}

    first = run_act(lab, project, workflow, event, repos, "steps-1")
    assert_succeeded(first)
    # One venv for the job: setup installs (and deploy adds the `serve` extra), the others reuse it.
    assert len(re.findall(r"Install lepton-ci \(source [0-9a-f]+\) into ", first.log)) <= 2, first
    assert len(step_lines(first.log, "lepton-ci: reusing ")) >= 4, first
    # The outputs reach a later step.
    outputs = step_lines(first.log, "lepton outputs: ")
    assert len(outputs) == 1, first
    m = re.fullmatch(
        r"lepton outputs: version=(\d+) verdict=(\w+) endpoint=(http://127\.0\.0\.1:\d+) "
        r"comment=(\S+/octo/digits/pull/7#issuecomment-(\d+)) baseline=(.+)",
        outputs[0],
    )
    assert m and m.group(1) == "1" and m.group(2) == "pass", outputs
    assert m.group(6).startswith("none (first run"), outputs  # the gate's output says what it compared with
    # The job summary holds the report and the line the workflow added.
    summary = summaries(first.log)
    assert "<!-- lepton-ci:report model=digits -->" in summary and "gate passed" in summary, first
    assert re.search(r"digits v1 \(sha256:[0-9a-f]{64}\): gate pass", summary), first
    # The local deployment was stopped by the workflow's last step.
    assert step_lines(first.log, "digits v1 on local: stopped"), first

    created = lab.standin.calls("issues/create-comment", pr=7)
    assert len(created) == 1 and created[0]["body"]["body"].startswith(STICKY), created
    comments = lab.standin.comments(7)
    assert [c["id"] for c in comments] == [int(m.group(5))]
    statuses = [r for r in lab.standin.calls("repos/create-commit-status") if r["route"].endswith(sha)]
    assert [(s["route"].rsplit("/", 1)[1], s["body"]["state"]) for s in statuses] == [(sha, "success")]
    assert all(r["auth"] == "Bearer" for r in lab.standin.requests())

    rerun = run_act(lab, project, workflow, event, repos, "steps-2")
    assert_succeeded(rerun)
    assert len(lab.standin.calls("issues/create-comment", pr=7)) == 1, "a rerun must not add a second comment"
    updated = [
        r
        for r in lab.standin.calls("issues/update-comment")
        if r["route"].endswith(f"/issues/comments/{comments[0]['id']}")
    ]
    assert len(updated) == 1, updated
    after = lab.standin.comments(7)
    assert len(after) == 1 and after[0]["id"] == comments[0]["id"] and after[0]["body"].startswith(STICKY)
    assert after[0]["body"] != comments[0]["body"]  # the new run's report (another run id)
    assert step_lines(rerun.log, "lepton-ci: comment updated: ")

    # A push that fails the gate: the job fails, tag and deploy are skipped, the report still updates the
    # one comment, the commit gets a failure status and the failed rule an annotation on its line.
    config = project / "lepton.yml"
    config.write_text(config.read_text().replace("min: 0.90", "min: 0.999"))
    git(project, "commit", "-qam", "demand more")
    sha2 = git(project, "rev-parse", "HEAD")
    failing = run_act(lab, project, workflow, pull_request_event(lab.dir / "event-7b.json", 7, sha2), repos, "steps-3")
    assert failing.code != 0 and "🏁  Job failed" in failing.log, failing
    assert TOKEN not in failing.log
    assert re.search(r"Failure - Main Gate", failing.log) and "Main Tag" not in failing.log, failing
    assert "Main Deploy" not in failing.log and "Main Stop the local deployment" not in failing.log, failing
    assert re.search(r"Success - Main Report", failing.log), failing
    line = next(i for i, text in enumerate(config.read_text().splitlines(), 1) if "min: 0.999" in text) - 1
    assert re.search(
        rf"::error file=lepton\.yml,line={line},title=lepton-ci gate%3A eval\.accuracy min::", failing.log
    ), failing
    assert step_lines(failing.log, "lepton outputs: version= verdict=fail endpoint= comment="), failing
    assert len(lab.standin.calls("issues/create-comment", pr=7)) == 1
    final = lab.standin.comments(7)
    assert len(final) == 1 and "gate failed" in final[0]["body"], final
    failed = [r["body"]["state"] for r in lab.standin.calls("repos/create-commit-status") if r["route"].endswith(sha2)]
    assert failed == ["failure"], failed
    print(f"\nact: first run {first.seconds:.1f}s, rerun {rerun.seconds:.1f}s, failing gate {failing.seconds:.1f}s")


def test_umbrella_action_runs_the_whole_pipeline(lab: Lab, serving_base: Any) -> None:
    """`uses: lepton/ci@v1` with `step: run`: all six steps in one action (build, because the workflow's
    `image-repository` input names a repository, from a repository variable: a model-only rebuild on the
    session's serving base), outputs and the comment."""
    project, _ = make_project(lab, "umbrella")
    image_repo = serving_base.repository("octo/digits-pipeline")
    config = project / "lepton.yml"
    config.write_text(config.read_text() + f"build:\n  base_image: {serving_base.base_image}\n")
    git(project, "commit", "-qam", "build the serving image")
    sha = git(project, "rev-parse", "HEAD")
    event = pull_request_event(lab.dir / "event-8.json", 8, sha)
    run = run_act(
        lab,
        project,
        WORKFLOWS / "lepton-pipeline.yml",
        event,
        {"lepton/ci@v1": lab.src},
        "umbrella",
        extra=["--var", f"LEPTON_IMAGE_REPOSITORY={image_repo}"],
    )
    assert_succeeded(run)
    outputs = step_lines(run.log, "lepton outputs: ")
    assert len(outputs) == 1, run
    m = re.fullmatch(
        r"lepton outputs: steps=train:ok,gate:ok,tag:ok,build:ok,deploy:ok,report:ok version=1 verdict=pass "
        r"comment=\S+/octo/digits/pull/8#issuecomment-\d+ image=(\S+)@(sha256:[0-9a-f]{64})",
        outputs[0],
    )
    assert m and m.group(1) == image_repo, outputs
    assert "model-only rebuild" in run.log, run
    host, _, path = image_repo.partition("/")
    got = requests.head(
        f"http://{host}/v2/{path}/manifests/v1",
        headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
        },
        timeout=10,
    )
    assert got.headers.get("Docker-Content-Digest") == m.group(2), got.headers
    assert step_lines(run.log, "C=0.5 accuracy="), run  # train.py saw the `params` input
    created = lab.standin.calls("issues/create-comment", pr=8)
    # Its own sticky comment: the workflow's name (lepton-pipeline) differs from the quick start's (lepton).
    assert len(created) == 1 and created[0]["body"]["body"].startswith(STICKY_PIPELINE)
    # The comment names the image the run built and deployed, pinned by digest.
    assert f"**Image:** `{m.group(1)}@{m.group(2)}` · model-only rebuild · " in created[0]["body"]["body"], created
    assert len(lab.standin.comments(8)) == 1
    assert "<!-- lepton-ci:report model=digits -->" in summaries(run.log)
    print(f"\nact: umbrella run {run.seconds:.1f}s")


def documented_act_command() -> list[str]:
    """The `act ...` command line printed in docs/github-actions.md, continuations joined, as words."""
    blocks = re.findall(r"^```[\w-]*\n(.*?)^```", DOCS.read_text(), flags=re.M | re.S)
    found = [b for b in blocks if b.startswith("act ")]
    assert len(found) == 1, "docs/github-actions.md should print one act command line"
    return shlex.split(found[0].replace("\\\n", " "))


def test_documented_act_command_with_the_example_event(lab: Lab) -> None:
    """The act command of docs/github-actions.md, word for word but for its placeholders, with the example
    event file as shipped, on a new project (wine data, not the shipped example) whose workflow is the quick
    start as printed: the job runs on the host and the pull request reads as one from the same repository
    (not a fork), so the report posts its comment."""
    words = documented_act_command()
    assert words[:2] == ["act", "pull_request"], words
    pairs = list(zip(words, words[1:], strict=False))
    assert ("-P", "ubuntu-latest=-self-hosted") in pairs and ("-e", "pull_request.json") in pairs, words
    assert ("-W", ".github/workflows/lepton.yml") in pairs, words
    port = lab.standin.url.rsplit(":", 1)[1]
    fill = {
        "/path/to/lepton-ci": str(lab.src),
        "GITHUB_TOKEN=...": f"GITHUB_TOKEN={TOKEN}",
        "LEPTON_CI_SIGNING_KEY=...": f"LEPTON_CI_SIGNING_KEY={SIGNING_KEY}",
    }
    cmd = [lab.act]
    for word in words[1:]:
        for placeholder, value in fill.items():
            word = word.replace(placeholder, value)
        cmd.append(word.replace(":PORT", f":{port}"))
    leftover = [w for w in cmd if "..." in w or "PORT" in w or "/path/to" in w]
    assert not leftover, f"placeholders the test does not know: {leftover}"

    project, sha = make_project(lab, "documented", wine=True)
    shutil.copy2(EXAMPLE_EVENT, project / "pull_request.json")
    (project / ".github" / "workflows").mkdir(parents=True)
    shutil.copy2(WORKFLOWS / "lepton.yml", project / ".github" / "workflows" / "lepton.yml")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "the quick start workflow")
    sha = git(project, "rev-parse", "HEAD")

    run = act_command(lab, project, cmd, "documented")
    assert_succeeded(run)
    assert "from the fork" not in run.log, run
    outputs = step_lines(run.log, "lepton outputs: ")
    assert len(outputs) == 1 and re.match(r"lepton outputs: version=1 verdict=pass endpoint=http://127", outputs[0])
    assert step_lines(run.log, "wine v1 on local: stopped"), run  # the wine model was deployed, then stopped
    created = lab.standin.calls("issues/create-comment", pr=DOC_PR)
    assert len(created) == 1 and created[0]["body"]["body"].startswith(STICKY_WINE), created
    statuses = [r for r in lab.standin.calls("repos/create-commit-status") if r["route"].endswith(sha)]
    assert [s["body"]["state"] for s in statuses] == ["success"], statuses  # on the checkout's HEAD
    print(f"\nact: documented command {run.seconds:.1f}s")


def lepton_ci(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """This checkout's `lepton-ci ARGS` (from the test's venv), in `cwd`, with `env` added."""
    cli = "import sys; from lepton_ci.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", cli, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def registry_versions(url: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    proc = lepton_ci("registry", "-r", url, "list", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_job_env_settings_apply_and_inputs_win(lab: Lab) -> None:
    """A job-level LEPTON_CI_REGISTRY (from a repository variable) and LEPTON_CI_CONFIG reach every action
    not given the input; a non-empty `registry` input wins over the job's. The gate outputs name the
    baseline, and `lepton-ci` is on PATH for a plain `run:` step."""
    project, sha = make_project(lab, "settings")
    # A config under another name, for another model: the default lepton.yml would register `digits`.
    alt = (project / "lepton.yml").read_text()
    assert "  name: digits\n" in alt
    (project / "digits-alt.yml").write_text(alt.replace("  name: digits\n", "  name: digits-alt\n"))
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "another config")
    job_registry, input_registry = lab.dir / "settings-job-registry", lab.dir / "settings-input-registry"
    event = pull_request_event(lab.dir / "event-settings.json", 7, sha)
    run = run_act(
        lab,
        project,
        WORKFLOWS / "checks" / "settings.yml",
        event,
        {"lepton/ci@v1": lab.src},
        "settings",
        extra=["--var", f"JOB_REGISTRY=file://{job_registry}", "--var", f"INPUT_REGISTRY=file://{input_registry}"],
    )
    assert_succeeded(run)

    on_path = step_lines(run.log, "on PATH: ")
    assert len(on_path) == 1 and re.fullmatch(
        r"on PATH: lepton-ci \S+ at \S+/lepton-ci-[0-9a-f]{12}/bin/lepton-ci", on_path[0]
    ), run
    assert step_lines(run.log, "first gate: ") == ["first gate: source=none version= baseline=none (baseline disabled)"]
    second = step_lines(run.log, "second gate: ")
    assert len(second) == 1 and re.fullmatch(
        r"second gate: source=registry ref=production version=1 verdict=pass "
        r"baseline=registry production\D*1\b.*",
        second[0],
    ), run
    assert step_lines(run.log, "tagged: ") == ["tagged: model=digits-alt job=1 input=1"], run

    # Where the versions went: the job's registry got the no-input tag, the input's registry the other.
    job = registry_versions(f"file://{job_registry}")
    assert [(v["model"], v["version"], v["aliases"]) for v in job] == [("digits-alt", 1, ["production"])], job
    given = registry_versions(f"file://{input_registry}")
    assert [(v["model"], v["version"], v["aliases"]) for v in given] == [("digits-alt", 1, ["candidate"])], given
    print(f"\nact: settings run {run.seconds:.1f}s")


def documented_workflow(path: str) -> str:
    """The workflow docs/github-actions.md prints under `<!-- workflow: PATH -->`, as printed."""
    found = re.findall(rf"<!-- workflow: {re.escape(path)} -->\n```yaml\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert len(found) == 1, f"docs/github-actions.md should print {path} once"
    return found[0]


def test_documented_oci_registry_workflow_outlives_the_runner(
    lab: Lab, serving_base: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/github-actions.md's GHCR workflow, as printed but for the registry's host (a real CNCF
    distribution server on loopback, with htpasswd auth), on two pushes to one pull request: the job's
    LEPTON_REGISTRY_USER (github.actor) and LEPTON_REGISTRY_PASSWORD (secrets.GITHUB_TOKEN) reach every
    action; the first run finds no baseline and deploys v1 (which moves `production` in the registry), the
    second gates against that. Afterwards the registry holds both versions and `registry check` is clean.

    The build action pushes each version's serving image to `build.image`, a repository of the session's
    serving-base registry (another host than the model registry): a model-only rebuild on the base there,
    the job's credentials moved to the model registry's host by the action's login (the model registry
    refuses anonymous reads, so the build could not fetch the model files without them)."""
    text = documented_workflow("tests/e2e/workflows/lepton-oci.yml")
    ghcr = "oci://ghcr.io/octo/models"
    assert text.count(ghcr) == 1 and "LEPTON_REGISTRY_PASSWORD: ${{ secrets.GITHUB_TOKEN }}" in text, text
    assert "packages: write" in text and "LEPTON_REGISTRY_USER: ${{ github.actor }}" in text, text
    with RegistryServer(lab.dir / "oci-registry", htpasswd=True) as server:
        url = server.url("octo/models")
        anonymous = requests.get(f"http://{server.host}/v2/", timeout=10)
        assert anonymous.status_code == 401, "the registry must demand credentials, or they are not tested"
        workflow = lab.dir / "oci-workflow" / "lepton-oci.yml"
        workflow.parent.mkdir()
        workflow.write_text(text.replace(ghcr, url))
        project, _ = make_project(lab, "oci")
        image_repo = serving_base.repository("octo/digits-serve")
        config = project / "lepton.yml"
        config.write_text(
            config.read_text() + f"build:\n  image: {image_repo}\n  base_image: {serving_base.base_image}\n"
        )
        git(project, "commit", "-qam", "build the serving image")
        sha = git(project, "rev-parse", "HEAD")
        repos = {"lepton/ci@v1": lab.src}
        # The job's token is the registry's password here (GHCR takes the job's GITHUB_TOKEN, the stand-in
        # accepts it too), and github.actor the registry's user.
        actor = ["--actor", REGISTRY_USER]
        event = pull_request_event(lab.dir / "event-oci-1.json", OCI_PR, sha)
        first = run_act(lab, project, workflow, event, repos, "oci-1", extra=actor, token=REGISTRY_PASSWORD)
        assert_succeeded(first)
        assert REGISTRY_PASSWORD not in first.log, "the registry password leaked into the job log"
        assert step_lines(first.log, "lepton outputs: ") == [
            "lepton outputs: version=1 verdict=pass source=none "
            "baseline=none (first run: no 'production' in the registry yet)"
        ], first
        assert step_lines(first.log, "digits v1 on local: stopped"), first
        first_image = built_image(first, image_repo, "v1", sha)

        (project / "NOTES.md").write_text("A second push to the pull request.\n")
        git(project, "add", "-A")
        git(project, "commit", "-q", "-m", "second push")
        sha2 = git(project, "rev-parse", "HEAD")
        event2 = pull_request_event(lab.dir / "event-oci-2.json", OCI_PR, sha2)
        second = run_act(lab, project, workflow, event2, repos, "oci-2", extra=actor, token=REGISTRY_PASSWORD)
        assert_succeeded(second)
        assert REGISTRY_PASSWORD not in second.log, "the registry password leaked into the job log"
        outputs = step_lines(second.log, "lepton outputs: ")
        assert len(outputs) == 1 and outputs[0].startswith(
            "lepton outputs: version=2 verdict=pass source=registry baseline=registry production = v1 "
        ), second
        second_image = built_image(second, image_repo, "v2", sha2)
        assert second_image != first_image

        # One sticky comment for this workflow, updated by the second run.
        created = lab.standin.calls("issues/create-comment", pr=OCI_PR)
        assert len(created) == 1 and created[0]["body"]["body"].startswith(STICKY_OCI), created
        assert len(lab.standin.comments(OCI_PR)) == 1

        # What the registry holds, seen from outside the runner, with the same credentials.
        creds_env = {"LEPTON_REGISTRY_USER": REGISTRY_USER, "LEPTON_REGISTRY_PASSWORD": REGISTRY_PASSWORD}
        versions = registry_versions(url, env=creds_env)
        assert [(v["model"], v["version"]) for v in versions] == [("digits", 1), ("digits", 2)], versions
        assert "production" in next(v for v in versions if v["version"] == 2)["aliases"], versions
        check = lepton_ci("registry", "-r", url, "check", cwd=project, env=creds_env)
        assert check.returncode == 0, check.stdout + check.stderr
        # Each version carries the image.json its build wrote (attached in the model registry), naming the
        # image the action's outputs named, built on the serving base, of exactly that version.
        from lepton_ci.build.attach import attached_images
        from lepton_ci.registry import open_registry

        for key, value in creds_env.items():
            monkeypatch.setenv(key, value)
        registry = open_registry(url, project)
        for v, image in ((1, first_image), (2, second_image)):
            mv = registry.get("digits", str(v))
            (record,) = attached_images(registry, mv)
            assert record["image"] == image and record["mode"] == "model-only" and record["pushed"], record
            assert record["model"] == {"name": "digits", "version": v, "digest": mv.digest}, record
            assert record["base"].startswith(f"{image_repo}@sha256:"), record
        tags = requests.get(
            f"http://{server.host}/v2/octo/models/digits/tags/list",
            auth=(REGISTRY_USER, REGISTRY_PASSWORD),
            timeout=10,
        )
        assert tags.status_code == 200, tags.text
        names = tags.json()["tags"]
        assert sorted(t.split("-")[0] for t in names if re.fullmatch(r"v\d+-[0-9a-f]{12}", t)) == ["v1", "v2"], names
    print(f"\nact: oci runs {first.seconds:.1f}s and {second.seconds:.1f}s")


def built_image(run: ActRun, repository: str, tag: str, sha: str) -> str:
    """The build action's outputs, as the workflow printed them, checked against the registry: the image
    the `v<N>` tag names there is the output digest, a model-only rebuild; returns REPOSITORY@DIGEST."""
    lines = step_lines(run.log, "image outputs: ")
    assert len(lines) == 1, run
    m = re.fullmatch(
        r"image outputs: image=(\S+) digest=(sha256:[0-9a-f]{64}) mode=(\S+) json=(\S+) tags=(.*)", lines[0]
    )
    assert m, lines
    image, digest, mode, record, tags = m.groups()
    assert image == f"{repository}@{digest}" and mode == "model-only", lines
    assert record.startswith("/") and record.endswith("/.lepton/image.json"), lines
    assert tags.split() == [tag, f"sha-{sha[:12]}"], lines
    assert "lepton-ci: base image" in run.log and "model-only rebuild" in run.log, run
    host, _, path = repository.partition("/")
    got = requests.get(
        f"http://{host}/v2/{path}/manifests/{tag}",
        headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
        },
        timeout=10,
    )
    assert got.status_code == 200, got.text
    assert got.headers["Docker-Content-Digest"] == digest == "sha256:" + hashlib.sha256(got.content).hexdigest()
    labels = requests.get(f"http://{host}/v2/{path}/blobs/{got.json()['config']['digest']}", timeout=10).json()[
        "config"
    ]["Labels"]
    assert labels["org.opencontainers.image.version"] == tag and labels["org.opencontainers.image.revision"] == sha
    return image


def test_unreadable_registry_fails_the_gate_job(lab: Lab) -> None:
    """Fail closed, end to end: a registry that cannot be read (an `oci://` input nothing answers at, a job
    env `file://` directory that holds no registry) fails the gate step and the job; no verdict is set."""
    project, sha = make_project(lab, "fail-closed")
    event = pull_request_event(lab.dir / "event-fail-closed.json", 7, sha)
    run = run_act(
        lab, project, WORKFLOWS / "checks" / "fail-closed.yml", event, {"lepton/ci@v1": lab.src}, "fail-closed"
    )
    assert run.code != 0 and "🏁  Job failed" in run.log and "Job succeeded" not in run.log, run
    assert TOKEN not in run.log and SIGNING_KEY not in run.log
    outputs = sorted(step_lines(run.log, "fail-closed outputs: "))
    assert outputs == [
        "fail-closed outputs: case=input gate=failure verdict= baseline=",
        "fail-closed outputs: case=job env gate=failure verdict= baseline=",
    ], run
    assert "oci://127.0.0.1:9/nothing" in run.log and "/etc is not a lepton-ci registry" in run.log, run
    assert not re.search(r"baseline: none|first run|gate passed|verdict: pass", run.log), run
    assert len(re.findall(r"Failure - Main Gate", run.log)) == 2, run
    print(f"\nact: fail-closed run {run.seconds:.1f}s")


def test_release_moves_major_tag_and_split_actions_work_standalone(lab: Lab) -> None:
    """scripts/release on a copy of this checkout: v0.x.y tags, the major tag moves, and the split
    repositories run under act with `uses: lepton/<step>@vN`, each installing the source it carries."""
    repo = copy_checkout(lab.dir / "release")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "release")
    init = repo / "lepton_ci" / "__init__.py"
    version = re.search(r'^__version__ = "([^"]+)"', init.read_text(), flags=re.M).group(1)
    major_n, minor, patch = (int(x) for x in version.split("."))
    major = f"v{major_n}"
    git(repo, "tag", "-a", f"v{version}", "-m", f"lepton-ci {version}")
    remote = lab.dir / "remotes"
    for name in ("ci", "setup", "train", "gate", "tag", "build", "deploy", "report", "sweep"):
        git(lab.dir, "init", "-q", "--bare", str(remote / f"{name}.git"))
    split = lab.dir / "split"

    def release(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "release"), "-C", str(repo), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    bad = release("--tag", f"v{major_n}.{minor}.{patch + 5}")
    assert bad.returncode == 2 and "does not exist" in bad.stderr, bad
    first = release("--push", str(remote / "ci.git"), "--split", str(split), "--split-remote", str(remote))
    assert first.returncode == 0, first
    v1 = git(repo, "rev-parse", f"v{version}^{{commit}}")
    assert git(repo, "rev-parse", f"{major}^{{commit}}") == v1
    assert git(remote / "ci.git", "rev-parse", f"{major}^{{commit}}") == v1

    # The next release moves the major tag (locally, on the remote, and in every split repository).
    nxt = f"{major_n}.{minor}.{patch + 1}"
    init.write_text(init.read_text().replace(f'__version__ = "{version}"', f'__version__ = "{nxt}"'))
    git(repo, "commit", "-qam", f"lepton-ci {nxt}")
    wrong = f"v{major_n}.{minor}.{patch + 2}"
    git(repo, "tag", wrong)
    mismatch = release("--tag", wrong)
    assert mismatch.returncode == 2 and "does not match" in mismatch.stderr, mismatch
    git(repo, "tag", "-d", wrong)
    git(repo, "tag", "-a", f"v{nxt}", "-m", f"lepton-ci {nxt}")
    second = release("--push", str(remote / "ci.git"), "--split", str(split), "--split-remote", str(remote))
    assert second.returncode == 0, second
    v2 = git(repo, "rev-parse", "HEAD")
    assert git(remote / "ci.git", "rev-parse", f"{major}^{{commit}}") == v2 != v1
    tracked = set(git(repo, "ls-tree", "-r", "--name-only", f"v{nxt}", "--", "lepton_ci").split("\n"))
    for step in ("setup", "train", "gate", "tag", "build", "deploy", "report", "sweep"):
        files = sorted(p.name for p in (split / step).iterdir() if p.name != ".git")
        assert files == ["README.md", "action.yml", "lepton_ci", "pyproject.toml", "setup.cfg"], files
        # The release's source, byte for byte: what `pip install .` next to the action needs, nothing else.
        carried = {str(p.relative_to(split / step)) for p in (split / step / "lepton_ci").rglob("*") if p.is_file()}
        assert carried == tracked, (step, carried ^ tracked)
        assert (split / step / "setup.cfg").read_bytes() == (repo / "setup.cfg").read_bytes()
        assert f'__version__ = "{nxt}"' in (split / step / "lepton_ci" / "__init__.py").read_text()
        tags = set(git(remote / f"{step}.git", "tag", "--list").split())
        assert {f"v{version}", f"v{nxt}", major} <= tags, (step, tags)
        action = (split / step / "action.yml").read_text()
        assert f"from lepton/ci actions/{step} at v{nxt}" in action, action[:200]
        assert yaml.safe_load(action)["inputs"]["version"]["default"] == "", "an empty `version` installs the source"
    again = release("--split", str(split))  # idempotent: same content under the same tags
    assert again.returncode == 0, again

    # Standalone: act resolves lepton/<step>@vN to the split repositories. The wheelhouse holds lepton-ci's
    # dependencies but no lepton-ci, and pip has no index (PIP_NO_INDEX): the only lepton-ci to install is
    # the source in the split repository.
    assert not list(lab.wheels.glob("lepton_ci-*"))
    workflow = lab.dir / "split-workflow" / "lepton.yml"
    workflow.parent.mkdir()
    workflow.write_text(SPLIT_WORKFLOW.replace("@vN", f"@{major}"))
    project, sha = make_project(lab, "split-project")
    event = pull_request_event(lab.dir / "event-split.json", 7, sha)
    run = run_act(
        lab,
        project,
        workflow,
        event,
        {f"lepton/{s}@{major}": split / s for s in ("setup", "train", "gate", "tag", "deploy", "report")},
        "split",
    )
    assert_succeeded(run)
    installs = re.findall(r"Install lepton-ci \((source [0-9a-f]+|release [^)]+)\) into ", run.log)
    assert len(installs) == 1 and installs[0].startswith("source "), run  # once, from the source; then reused
    assert len(step_lines(run.log, "lepton-ci: reusing ")) >= 4, run
    outputs = step_lines(run.log, "split outputs: ")
    assert len(outputs) == 1 and re.fullmatch(
        rf"split outputs: installed={re.escape(nxt)} run=\S+ verdict=pass "
        r"version=1 report=\S+lepton-report\.md",
        outputs[0],
    ), run
    print(f"\nact: split actions run {run.seconds:.1f}s")


SPLIT_WORKFLOW = """\
name: lepton-split
on:
  pull_request:
permissions: {}
jobs:
  model:
    runs-on: [self-hosted, gpu]
    permissions:
      contents: read
    steps:
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
        with:
          persist-credentials: false
      - id: setup
        uses: lepton/setup@vN
        with:
          extras: sklearn
      - id: train
        uses: lepton/train@vN
      - id: gate
        uses: lepton/gate@vN
        with:
          baseline: none
      - id: tag
        uses: lepton/tag@vN
        with:
          aliases: candidate
      - id: report
        uses: lepton/report@vN
        with:
          post: "false"
      - env:
          INSTALLED: ${{ steps.setup.outputs.lepton-ci-version }}
          RUN_ID: ${{ steps.train.outputs.run-id }}
          VERDICT: ${{ steps.gate.outputs.verdict }}
          VERSION: ${{ steps.tag.outputs.version }}
          REPORT: ${{ steps.report.outputs.report-path }}
        run: |
          echo "split outputs: installed=$INSTALLED run=$RUN_ID verdict=$VERDICT version=$VERSION report=$REPORT"
"""
