"""GitLab CI for real: gitlab-ci-local runs the `.gitlab-ci.yml` files of docs/gitlab.md on a copy of
examples/sklearn-digits, against the GitLab notes API stand-in (tests/support/gitlab_standin.py).

- classic include (`include: project:` + `extends: .lepton-<step>`), run twice (one sticky note, found on
  page 2 and updated in place; dotenv outputs reach a later job), then the report job with only
  CI_JOB_TOKEN (passes, explains the `api` scope, posts nothing), then a failing gate;
- the per-step components, run twice; unknown inputs pass gitlab-ci-local but not scripts/check-gitlab-inputs;
- the all-in-one `pipeline` component, run once.

Jobs run with the shell executor (`--force-shell-executor`), each in its own copy of the project
(`--shell-isolation`), so records really travel as artifacts and outputs as dotenv reports. The
`lepton/ci-templates` project is served from gitlab-ci-local's include cache (a copy of gitlab-templates/),
the package from a copy of this checkout, installed once by the first job into a venv all jobs share.
gitlab-ci-local and rsync come from scripts/deps/30-gitlab.sh.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from tests.support.keys import PRIVATE_ONE_LINE, commit_public_key

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sklearn-digits"
DOCS = ROOT / "docs" / "gitlab.md"
GCL = Path(os.environ.get("LEPTON_GITLAB_CI_LOCAL")
           or ROOT / ".cache" / "node" / "gitlab-ci-local" / "node_modules" / ".bin" / "gitlab-ci-local")
ORIGIN_HOST = "gitlab.example.com"
TEMPLATES_PROJECT = "lepton/ci-templates"
TEMPLATES_REF = "0.1.0"
PROJECT_ID = "4242"
TOKEN = "glpat-lepton-e2e-0123456789"
JOB_TOKEN = "glcbt-job-token-not-for-notes"
SIGNING_KEY = PRIVATE_ONE_LINE
STICKY = "<!-- lepton-ci:sticky model=digits"
MRS = (7, 8, 9)  # merge request iids: classic, components, pipeline
SEEDED = 130  # unrelated notes on each merge request before the first pipeline: more than one page
CHECK_OUTPUTS_JOB = """
check-outputs:
  stage: report
  script:
    - echo "outputs version=${LEPTON_VERSION:-} digest=${LEPTON_DIGEST:-} verdict=${LEPTON_VERDICT:-} endpoint=${LEPTON_ENDPOINT:-} run=${LEPTON_RUN_ID:-}"
"""
# GitLab accepts the components' default `tags: []`; the JSON schema gitlab-ci-local validates with wants
# at least one tag (firecow/gitlab-ci-local#1503).
SCHEMA_FLAGS = ["--ignore-schema-paths", "#/definitions/tags/minItems"]
PASSTHROUGH = re.compile(r"^(HOME|LANG|LC_\w+|TMPDIR|PIP_\w+|\w*CA_BUNDLE|\w*CA_CERTS\w*|SSL_CERT_\w+|"
                         r"https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY)$")


def doc_snippet(name: str) -> str:
    m = re.search(rf"<!-- test: {re.escape(name)} -->\n```yaml\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert m, f"docs/gitlab.md has no snippet marked <!-- test: {name} -->"
    return m.group(1)


def _require_tools() -> None:
    missing = [what for what, ok in [(f"gitlab-ci-local ({GCL})", os.access(GCL, os.X_OK)),
                                     ("rsync", shutil.which("rsync")), ("git", shutil.which("git")),
                                     ("node", shutil.which("node"))] if not ok]
    if missing:
        msg = f"missing {', '.join(missing)}: scripts/test installs them (scripts/deps/30-gitlab.sh)"
        if os.environ.get("CI") == "true" or os.environ.get("LEPTON_GITLAB_CI_LOCAL"):
            pytest.fail(msg)
        pytest.skip(msg)


class StandIn:
    """The GitLab notes API stand-in (tests/support/gitlab_standin.py), one process for the module.

    It accepts only TOKEN (PRIVATE-TOKEN) and JOB_TOKEN (reads), only the merge requests in MRS, and starts
    with SEEDED unrelated notes on each, so finding the sticky note takes more than one page.
    """

    def __init__(self, workdir: Path) -> None:
        self.state = workdir / "gitlab-standin.jsonl"
        self.log_path = workdir / "gitlab-standin.log"
        self.log = open(self.log_path, "wb")
        cmd = [sys.executable, "-m", "tests.support.gitlab_standin", "--port", "0", "--state", str(self.state),
               "--token", TOKEN, "--job-token", JOB_TOKEN, "--project", PROJECT_ID, "--only-project",
               "--mrs", ",".join(map(str, MRS))]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL,
                                     text=True)
        line = self.proc.stdout.readline().strip()  # the stand-in prints its base URL once it listens
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(f"GitLab stand-in did not start: {line!r} {self.log_path.read_text()[-2000:]}")
        self.api = line.rstrip("/")
        self.origin = self.api.rsplit("/api/v4", 1)[0]
        for iid in MRS:
            self._control("seed", {"issue": iid, "count": SEEDED})

    def _control(self, what: str, body: Any = None) -> Any:
        """The stand-in's control endpoints (not recorded, no auth)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.origin}/_standin/{what}", data=data,
                                     headers={"Content-Type": "application/json"} if data else {})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def notes(self, iid: int) -> list[dict[str, Any]]:
        return self._control(f"comments?issue={iid}")

    def violations(self) -> list[str]:
        return self._control("violations")

    def requests(self) -> list[dict[str, Any]]:
        if not self.state.is_file():
            return []
        return [json.loads(line) for line in self.state.read_text().splitlines() if line.strip()]

    def writes(self, iid: int) -> list[tuple[str, str]]:
        """(operation, path) of every note create/update for merge request `iid`."""
        notes = f"/projects/{PROJECT_ID}/merge_requests/{iid}/notes"
        return [(r["operation"], r["path"].split("?")[0]) for r in self.requests()
                if r.get("operation") in ("notes/create", "notes/update") and notes in r["path"]]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
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
    standin: StandIn
    package: str  # pip requirement for lepton-ci from a copy of this checkout
    venv: Path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    _require_tools()
    d = tmp_path_factory.mktemp("gitlab-ci")
    src = d / "lepton-ci-src"
    shutil.copytree(ROOT / "lepton_ci", src / "lepton_ci", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, src / name)
    if not (src / "README.md").exists():
        (src / "README.md").write_text("lepton-ci\n")
    standin = StandIn(d)
    try:
        yield Lab(dir=d, standin=standin, package=f"{src}[sklearn]", venv=d / "venv")
    finally:
        standin.stop()


@pytest.fixture(autouse=True)
def _no_contract_violations(lab: Lab) -> Iterator[None]:
    yield
    assert lab.standin.violations() == [], "requests that broke GitLab's API contract"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=CI", "-c", "user.email=ci@example.com", "-c", "init.defaultBranch=main",
                    *args], cwd=repo, check=True, capture_output=True, timeout=30)


def make_repo(lab: Lab, name: str, ci_yaml: str) -> Path:
    """A copy of the example in a git repo whose origin is a GitLab project, with lepton/ci-templates cached."""
    repo = lab.dir / name
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("__pycache__", ".lepton"))
    (repo / ".gitignore").write_text(".gitlab-ci-local/\n.lepton/\n.lepton-venv/\n")
    (repo / ".gitlab-ci.yml").write_text(ci_yaml)
    commit_public_key(repo)
    cache = repo / ".gitlab-ci-local" / "includes" / ORIGIN_HOST / TEMPLATES_PROJECT / TEMPLATES_REF
    shutil.copytree(ROOT / "gitlab-templates", cache)
    _git(repo, "init", "-q", "-b", "feature/smaller-c")
    _git(repo, "remote", "add", "origin", f"https://{ORIGIN_HOST}/acme/digits.git")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "digits model")
    _git(repo, "update-ref", "refs/remotes/origin/main", "HEAD")
    _git(repo, "symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/main")
    return repo


@dataclass
class Run:
    code: int
    output: str
    repo: Path

    def job_log(self, job: str) -> str:
        return (self.repo / ".gitlab-ci-local" / "output" / f"{job}.log").read_text()

    def passed(self) -> set[str]:
        return set(re.findall(r"^\s*PASS\s+(\S+)", self.output, flags=re.M))

    def __repr__(self) -> str:
        # pip's "Location ... is ignored" warnings (this machine's package index layout) crowd out the error
        useful = "\n".join(line for line in self.output.splitlines() if "is ignored: it is neither" not in line)
        return f"Run(code={self.code}, output=...{useful[-6000:]})"


def gcl(lab: Lab, repo: Path, *jobs: str, iid: int, token: str | None = TOKEN, extra: dict[str, str] | None = None,
        timeout: float = 300) -> Run:
    variables = {
        "GITLAB_CI": "true",  # gitlab-ci-local sets false; GitLab sets true
        "CI_API_V4_URL": lab.standin.api,
        "CI_PROJECT_ID": PROJECT_ID,
        "CI_PIPELINE_SOURCE": "merge_request_event",
        "CI_MERGE_REQUEST_IID": str(iid),
        "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main",
        "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "feature/smaller-c",
        "LEPTON_CI_PACKAGE": lab.package,
        "LEPTON_CI_VENV": str(lab.venv),
        "LEPTON_CI_REGISTRY": f"file://{lab.dir / ('registry-' + repo.name)}",
        "LEPTON_CI_SIGNING_KEY": SIGNING_KEY,
        **({"LEPTON_CI_GITLAB_TOKEN": token} if token else {}),
        **(extra or {}),
    }
    env = {k: v for k, v in os.environ.items() if PASSTHROUGH.match(k)}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
                                  if p and p != venv_bin and not p.startswith(sys.prefix + os.sep))
    for key in ("no_proxy", "NO_PROXY"):
        env[key] = ",".join(filter(None, [env.get(key), "127.0.0.1", "localhost"]))
    cmd = [str(GCL), *jobs, "--force-shell-executor", "--shell-isolation", "--no-artifacts-to-source", "--no-color",
           "--home", str(lab.dir / "gcl-home"),
           *SCHEMA_FLAGS,
           "--ignore-predefined-vars", ",".join(k for k in variables if k.startswith("CI_"))]
    for key, value in variables.items():
        cmd += ["--variable", f"{key}={value}"]
    try:
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    finally:
        stop_servers(repo)
    return Run(proc.returncode, proc.stdout + proc.stderr, repo)


def stop_servers(repo: Path) -> None:
    """Stop the model servers the local deploy target started from this repo's jobs (by pid, from /proc)."""
    marker = str(repo / ".gitlab-ci-local")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "lepton_ci.serve" in cmdline and marker in cmdline:
            pid = int(proc.name)
            try:
                os.killpg(pid, signal.SIGTERM) if os.getpgid(pid) == pid else os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def outputs_line(run: Run) -> dict[str, str]:
    m = re.search(r"^check-outputs\s*> outputs (.*)$", run.output, flags=re.M)
    assert m, run
    return dict(part.split("=", 1) for part in m.group(1).split())


def artifact(repo: Path, job: str, name: str) -> dict[str, Any]:
    return json.loads((repo / ".gitlab-ci-local" / "artifacts" / job / ".lepton" / name).read_text())


def assert_pipeline_passed(run: Run, jobs: list[str]) -> None:
    failed = [job for job in jobs if job not in run.passed()]
    logs = "".join(f"\n--- {job}.log (tail) ---\n{_log_tail(run, job)}" for job in failed[:1])
    assert run.code == 0, f"{run!r}{logs}"
    assert not failed, f"{run!r}{logs}"


def _log_tail(run: Run, job: str) -> str:
    try:
        text = run.job_log(job)
    except OSError:
        return "(no log)"
    return "\n".join(line for line in text.splitlines() if "is ignored: it is neither" not in line)[-3000:]


def assert_sticky_updated_in_place(lab: Lab, iid: int) -> dict[str, Any]:
    """One sticky note among the merge request's notes: created once, then only updated."""
    notes = lab.standin.notes(iid)
    assert len(notes) > SEEDED
    sticky = [n for n in notes if STICKY in n["body"]]
    assert len(sticky) == 1, [n["body"][:120] for n in notes if "lepton-ci" in n["body"]]
    writes = lab.standin.writes(iid)
    ops = [op for op, _ in writes]
    assert ops.count("notes/create") == 1 and ops.count("notes/update") >= 1, writes
    assert all(path.endswith(f"/notes/{sticky[0]['id']}") for op, path in writes if op == "notes/update"), writes
    return sticky[0]


def test_classic_include_reruns_job_token_and_failing_gate(lab: Lab):
    jobs = ["train", "gate", "tag", "deploy", "report", "check-outputs"]
    repo = make_repo(lab, "classic", doc_snippet("classic") + CHECK_OUTPUTS_JOB)
    iid = 7

    first = gcl(lab, repo, iid=iid)
    assert_pipeline_passed(first, jobs)
    assert "lepton-ci: installing" in first.job_log("train")
    assert "comment created" in first.job_log("report")
    assert [n for n in lab.standin.notes(iid) if STICKY in n["body"]]

    second = gcl(lab, repo, iid=iid)
    assert_pipeline_passed(second, jobs)
    assert "lepton-ci: installing" not in second.job_log("train")  # the venv is reused
    assert "comment updated" in second.job_log("report")
    note = assert_sticky_updated_in_place(lab, iid)
    assert "`production` = v1" in note["body"]  # the second run gated against the first one's deployment
    lists = [r for r in lab.standin.requests() if r["operation"] == "notes/list" and f"/merge_requests/{iid}/" in r["path"]]
    assert any("page=2" in r["path"] for r in lists), "the sticky note was not looked up past the first page"
    assert {r["auth"] for r in lab.standin.requests()} == {"PRIVATE-TOKEN"}
    assert TOKEN not in first.output + second.output  # masked in every log line

    # Dotenv reports from train, gate, tag and deploy reach a job of a later stage.
    version = artifact(repo, "tag", "version.json")
    deployment = artifact(repo, "deploy", "deployment.json")
    out = outputs_line(second)
    assert out["version"] == str(version["version"]) == "2"
    assert out["digest"] == version["digest"]
    assert out["verdict"] == "pass"
    assert out["endpoint"] == deployment["endpoint"]
    assert out["run"] == artifact(repo, "train", "run.json")["run_id"]

    # Only CI_JOB_TOKEN: the report job passes, says why nothing was posted, and posts nothing.
    before = len(lab.standin.requests())
    third = gcl(lab, repo, "report", iid=iid, token=None, extra={"CI_JOB_TOKEN": JOB_TOKEN})
    assert third.code == 0 and "report" in third.passed(), third
    log = third.job_log("report")
    assert "CI_JOB_TOKEN" in log and "`api` scope" in log and "LEPTON_CI_GITLAB_TOKEN" in log, log[-3000:]
    assert JOB_TOKEN not in third.output
    assert len(lab.standin.requests()) == before
    assert len([n for n in lab.standin.notes(iid) if STICKY in n["body"]]) == 1

    # A failing gate fails the pipeline; tag and deploy do not run, and the report (when: always) shows why.
    # gitlab-ci-local never starts a when:always job behind skipped jobs, so the report job is run by name,
    # with this run's train and gate artifacts only (as GitLab would give it).
    failing = gcl(lab, repo, iid=iid, extra={"LEPTON_CI_TRAIN_PARAMS": "C=0.0001 max_iter=50"})
    assert failing.code != 0 and {"train"} <= failing.passed(), failing
    assert re.search(r"^\s*FAIL\s+gate", failing.output, flags=re.M), failing
    assert "C=0.0001 accuracy=" in failing.job_log("train")
    assert artifact(repo, "gate", "gate.json")["verdict"] == "fail"  # kept although the job failed
    for job in ("tag", "deploy", "report", "check-outputs"):
        shutil.rmtree(repo / ".gitlab-ci-local" / "artifacts" / job, ignore_errors=True)
    report = gcl(lab, repo, "report", iid=iid)
    assert report.code == 0 and "report" in report.passed(), report
    assert "comment updated" in report.job_log("report")
    note = assert_sticky_updated_in_place(lab, iid)
    assert "gate failed" in note["body"] and "0.8356" in note["body"], note["body"][:600]


def test_components_twice(lab: Lab):
    jobs = [f"lepton-{s}" for s in ("train", "gate", "tag", "deploy", "report")] + ["check-outputs"]
    text = doc_snippet("components")
    repo = make_repo(lab, "components", text + CHECK_OUTPUTS_JOB)
    iid = 8
    checker = [sys.executable, str(ROOT / "scripts" / "check-gitlab-inputs")]
    ok = subprocess.run([*checker, str(repo / ".gitlab-ci.yml")], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr

    first = gcl(lab, repo, iid=iid)
    assert_pipeline_passed(first, jobs)
    assert "C=0.5 accuracy=" in first.job_log("lepton-train")  # the params input reached the training script
    second = gcl(lab, repo, iid=iid)
    assert_pipeline_passed(second, jobs)
    assert_sticky_updated_in_place(lab, iid)
    out = outputs_line(second)
    assert out["version"] == "2" and out["verdict"] == "pass"
    assert out["digest"] == artifact(repo, "lepton-tag", "version.json")["digest"]

    # gitlab-ci-local accepts an input the component does not declare; GitLab (and the checker) refuse it.
    (repo / ".gitlab-ci.yml").write_text(text.replace('params: "C=0.5 max_iter=300"', 'params: "C=0.5"\n      epochs: 3', 1))
    listed = subprocess.run([str(GCL), "--list", "--no-color", *SCHEMA_FLAGS], cwd=repo, capture_output=True, text=True, timeout=60,
                            env={**{k: v for k, v in os.environ.items() if PASSTHROUGH.match(k)},
                                 "PATH": os.environ.get("PATH", "")})
    assert listed.returncode == 0 and "lepton-train" in listed.stdout, listed.stdout + listed.stderr
    bad = subprocess.run([*checker, str(repo / ".gitlab-ci.yml")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        f"{repo / '.gitlab-ci.yml'}: include component $CI_SERVER_FQDN/lepton/ci-templates/train@0.1.0: "
        "unknown input 'epochs' (known inputs: directory, image, job-name, package, params, registry, requirements, "
        "stage, tags, venv)"]


def test_pipeline_component(lab: Lab):
    jobs = [f"lepton-{s}" for s in ("train", "gate", "tag", "deploy", "report")]
    repo = make_repo(lab, "pipeline", doc_snippet("pipeline"))
    iid = 9
    run = gcl(lab, repo, iid=iid)
    assert_pipeline_passed(run, jobs)
    assert "candidate -> v1, staging -> v1" in run.job_log("lepton-tag")
    notes = [n for n in lab.standin.notes(iid) if STICKY in n["body"]]
    assert len(notes) == 1 and "workflow=lepton-report" in notes[0]["body"]
    assert artifact(repo, "lepton-deploy", "deployment.json")["status"] == "healthy"
