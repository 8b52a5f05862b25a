"""GitLab CI for real: gitlab-ci-local runs the `.gitlab-ci.yml` files of docs/gitlab.md on a copy of
examples/sklearn-digits, against the GitLab notes API stand-in (tests/support/gitlab_standin.py).

- classic include (`include: project:` + `extends: .lepton-<step>`), two merge request pipelines (one sticky
  note, found on page 2 and updated in place; dotenv outputs, the gate's baseline among them, reach a later
  job; the second deploy replaces the first server, the stop job stops it), then the report job with only
  CI_JOB_TOKEN (passes, explains the `api` scope, posts nothing), a failing gate, and an unreachable registry;
- the per-step components, run twice; unknown inputs pass gitlab-ci-local but not check-gitlab-inputs;
- the all-in-one `pipeline` component in a branch pipeline: the report finds the merge request of the commit,
  and its build job (`build: true`) makes a daemonless model-only rebuild on the session's serving base
  (tests/support/serving_base.py), pushed to a registry that only takes the job's CI_REGISTRY_USER/PASSWORD;
- the setup script alone, as a Docker runner would run it: no git, a venv restored at another path.

lepton-ci is installed the way users get it: from the archive of the `lepton/ci-templates` project
(tests/support/gitlab_archive.py serves `git archive` of a repository built from this checkout), at the
component's commit (`$[[ component.sha ]]`, which gitlab-ci-local resolves with `git ls-remote`, pointed at
that repository) or at the classic include's tag. Settings come from the pipeline's own `variables:`.

Jobs run with the shell executor (`--force-shell-executor`), each in its own copy of the project
(`--shell-isolation`), so records really travel as artifacts and outputs as dotenv reports. The
`lepton/ci-templates` project is served from gitlab-ci-local's include cache (a copy of gitlab-templates/),
each test's jobs share one venv (installed by the first job).
gitlab-ci-local and rsync come from scripts/deps/30-gitlab.sh.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.gitlab_archive import publish
from tests.support.keys import PRIVATE_ONE_LINE, commit_public_key
from tests.support.oci_registry import PASSWORD, USER, RegistryServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sklearn-digits"
DOCS = ROOT / "docs" / "gitlab.md"
GCL = Path(
    os.environ.get("LEPTON_GITLAB_CI_LOCAL")
    or ROOT / ".cache" / "node" / "gitlab-ci-local" / "node_modules" / ".bin" / "gitlab-ci-local"
)
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
    - o="version=${LEPTON_VERSION:-} digest=${LEPTON_DIGEST:-} verdict=${LEPTON_VERDICT:-}"
    - o="$o endpoint=${LEPTON_ENDPOINT:-} run=${LEPTON_RUN_ID:-} baseline_source=${LEPTON_BASELINE_SOURCE:-}"
    - o="$o baseline_ref=${LEPTON_BASELINE_REF:-} baseline_version=${LEPTON_BASELINE_VERSION:-}"
    - echo "outputs $o"
    - echo "baseline ${LEPTON_BASELINE:-}"
"""
# GitLab accepts the components' default `tags: []`; the JSON schema gitlab-ci-local validates with wants
# at least one tag (firecow/gitlab-ci-local#1503).
SCHEMA_FLAGS = ["--ignore-schema-paths", "#/definitions/tags/minItems"]
PASSTHROUGH = re.compile(
    r"^(HOME|LANG|LC_\w+|TMPDIR|PIP_\w+|\w*CA_BUNDLE|\w*CA_CERTS\w*|SSL_CERT_\w+|"
    r"https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY)$"
)


def doc_snippet(name: str) -> str:
    m = re.search(rf"<!-- test: {re.escape(name)} -->\n```yaml\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert m, f"docs/gitlab.md has no snippet marked <!-- test: {name} -->"
    return m.group(1)


def _require_tools() -> None:
    missing = [
        what
        for what, ok in [
            (f"gitlab-ci-local ({GCL})", os.access(GCL, os.X_OK)),
            ("rsync", shutil.which("rsync")),
            ("git", shutil.which("git")),
            ("node", shutil.which("node")),
        ]
        if not ok
    ]
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

    def __init__(self, workdir: Path, name: str = "gitlab-standin", extra: tuple[str, ...] = ()) -> None:
        self.state = workdir / f"{name}.jsonl"
        self.log_path = workdir / f"{name}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (open while the stand-in runs; closed by stop())
        cmd = [
            sys.executable,
            "-m",
            "tests.support.gitlab_standin",
            "--port",
            "0",
            "--state",
            str(self.state),
            "--token",
            TOKEN,
            "--job-token",
            JOB_TOKEN,
            "--project",
            PROJECT_ID,
            "--only-project",
            "--mrs",
            ",".join(map(str, MRS)),
            *extra,
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL, text=True
        )
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
        req = urllib.request.Request(
            f"{self.origin}/_standin/{what}", data=data, headers={"Content-Type": "application/json"} if data else {}
        )
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
        return [
            (r["operation"], r["path"].split("?")[0])
            for r in self.requests()
            if r.get("operation") in ("notes/create", "notes/update") and notes in r["path"]
        ]

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


class Archive:
    """tests/support/gitlab_archive.py over the published `lepton/ci-templates` repository."""

    def __init__(self, workdir: Path) -> None:
        self.repo = workdir / "ci-templates.git-work"
        self.sha = publish(ROOT, self.repo, TEMPLATES_REF)
        self.log_path = workdir / "archive-requests.jsonl"
        self.stderr = open(workdir / "archive.log", "wb")  # noqa: SIM115 (closed by stop())
        cmd = [
            sys.executable,
            "-m",
            "tests.support.gitlab_archive",
            "--port",
            "0",
            "--repo",
            str(self.repo),
            "--project",
            TEMPLATES_PROJECT,
            "--log",
            str(self.log_path),
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL, text=True
        )
        self.api = self.proc.stdout.readline().strip()
        if not self.api.startswith("http://"):
            self.stop()
            raise RuntimeError(f"archive stand-in did not start: {self.api!r}")

    def url(self, ref: str) -> str:
        return f"{self.api}/projects/{TEMPLATES_PROJECT.replace('/', '%2F')}/repository/archive.tar.gz?sha={ref}"

    def requests(self) -> list[dict[str, Any]]:
        if not self.log_path.is_file():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc.stdout.close()
        self.stderr.close()


@dataclass
class Lab:
    dir: Path
    standin: StandIn
    archive: Archive

    @property
    def home(self) -> Path:
        """HOME of the runner (the gitlab-ci-local process and its shell jobs)."""
        return self.dir / "runner-home"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    _require_tools()
    d = tmp_path_factory.mktemp("gitlab-ci")
    (d / "runner-home").mkdir()
    archive = Archive(d)
    try:
        standin = StandIn(d)
    except BaseException:
        archive.stop()
        raise
    try:
        yield Lab(dir=d, standin=standin, archive=archive)
    finally:
        standin.stop()
        archive.stop()
        stop_servers(d)


@pytest.fixture(autouse=True)
def _no_contract_violations(lab: Lab) -> Iterator[None]:
    yield
    assert lab.standin.violations() == [], "requests that broke GitLab's API contract"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=CI", "-c", "user.email=ci@example.com", "-c", "init.defaultBranch=main", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        timeout=30,
    )


def with_variables(ci_yaml: str, **variables: str) -> str:
    """The pipeline with more global `variables:` (as a user would set them in .gitlab-ci.yml)."""
    data = yaml.safe_load(ci_yaml)
    data["variables"] = {**(data.get("variables") or {}), **variables}
    return yaml.safe_dump(data, sort_keys=False)


def make_repo(lab: Lab, name: str, ci_yaml: str, lepton_yml: str = "") -> Path:
    """A copy of the example in a git repo whose origin is a GitLab project, with lepton/ci-templates cached;
    `lepton_yml` is appended to the example's lepton.yml."""
    repo = lab.dir / name
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("__pycache__", ".lepton"))
    with open(repo / "lepton.yml", "a") as f:
        f.write(lepton_yml)
    (repo / ".gitignore").write_text(".gitlab-ci-local/\n.lepton/\n.lepton-venv/\n")
    (repo / ".gitlab-ci.yml").write_text(ci_yaml)
    commit_public_key(repo)
    cache = repo / ".gitlab-ci-local" / "includes" / ORIGIN_HOST / TEMPLATES_PROJECT / TEMPLATES_REF
    shutil.copytree(ROOT / "gitlab-templates", cache)
    _git(repo, "init", "-q", "-b", "feature/smaller-c")
    _git(repo, "remote", "add", "origin", f"https://{ORIGIN_HOST}/acme/{name}.git")
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


def gcl(
    lab: Lab,
    repo: Path,
    *jobs: str,
    iid: int | None,
    venv: str,
    token: str | None = TOKEN,
    extra: dict[str, str] | None = None,
    standin: StandIn | None = None,
    timeout: float = 420,
    cleanup: bool = True,
) -> Run:
    """One pipeline (or the named jobs): a merge request pipeline for `iid`, else a push (branch) pipeline."""
    standin = standin or lab.standin
    variables = {
        "GITLAB_CI": "true",  # gitlab-ci-local sets false; GitLab sets true
        "CI_API_V4_URL": standin.api,
        "CI_PROJECT_ID": PROJECT_ID,
        **(
            {
                "CI_PIPELINE_SOURCE": "merge_request_event",
                "CI_MERGE_REQUEST_IID": str(iid),
                "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main",
                "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "feature/smaller-c",
            }
            if iid is not None
            else {"CI_PIPELINE_SOURCE": "push"}
        ),
        # lepton-ci's source archive: this instance's API in real life, the archive stand-in here
        "LEPTON_CI_SOURCE_API": lab.archive.api,
        "LEPTON_CI_VENV": str(lab.dir / venv),
        "LEPTON_CI_SIGNING_KEY": SIGNING_KEY,
        **({"LEPTON_CI_GITLAB_TOKEN": token} if token else {}),
        **(extra or {}),
    }
    env = {k: v for k, v in os.environ.items() if PASSTHROUGH.match(k)}
    env["HOME"] = str(lab.home)
    env["PIP_CACHE_DIR"] = str(lab.dir / "pip-cache")  # shared by the tests' venvs (the jobs' default is per project)
    # `$[[ component.sha ]]`: gitlab-ci-local asks the origin with `git ls-remote`; answer from the published repo
    env.update(
        {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": f"url.file://{lab.archive.repo}.insteadOf",
            "GIT_CONFIG_VALUE_0": f"https://{ORIGIN_HOST}:443/{TEMPLATES_PROJECT}.git",
        }
    )
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(
        p
        for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
        if p and p != venv_bin and not p.startswith(sys.prefix + os.sep)
    )
    for key in ("no_proxy", "NO_PROXY"):
        env[key] = ",".join(filter(None, [env.get(key), "127.0.0.1", "localhost"]))
    cmd = [
        str(GCL),
        *jobs,
        "--force-shell-executor",
        "--shell-isolation",
        "--no-artifacts-to-source",
        "--no-color",
        "--home",
        str(lab.dir / "gcl-home"),
        *SCHEMA_FLAGS,
        "--ignore-predefined-vars",
        ",".join(k for k in variables if k.startswith("CI_")),
    ]
    for key, value in variables.items():
        cmd += ["--variable", f"{key}={value}"]
    try:
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    finally:
        if cleanup:
            stop_servers(lab.home, repo)
    return Run(proc.returncode, proc.stdout + proc.stderr, repo)


def servers(*under: Path) -> list[int]:
    """Pids of lepton-ci model servers whose working directory or command line is under one of `under`."""
    found = []
    marks = [str(u) for u in under]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd") if "lepton_ci.serve" in cmdline else ""
        except OSError:
            continue
        if "lepton_ci.serve" in cmdline and any(m in cmdline or cwd.startswith(m) for m in marks):
            found.append(int(proc.name))
    return found


def stop_servers(*under: Path) -> None:
    """Stop the model servers the local deploy target left running (by pid, found in /proc)."""
    for pid in servers(*under):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM) if os.getpgid(pid) == pid else os.kill(pid, signal.SIGTERM)


def state_dir(lab: Lab, repo: Path) -> Path:
    """LEPTON_CI_STATE_DIR's default for the repo's environment (lepton/feature-smaller-c, slugged by GitLab's
    rules to lepton-feature-sm-XXXXXX): $HOME/.lepton-ci/deployments/<project slug>/<environment slug>."""
    (found,) = (lab.home / ".lepton-ci" / "deployments" / f"acme-{repo.name}").glob("lepton-feature-sm*")
    return found


def recorded_server(state: Path) -> tuple[int, int]:
    """(pid, port) of the model server in the deployment.json the deploy job keeps on the runner."""
    d = json.loads((state / "deployment.json").read_text())
    pid = (d.get("state") or {}).get("pid")
    port = int(d["endpoint"].rsplit(":", 1)[1].split("/")[0])
    assert isinstance(pid, int), d
    return pid, port


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.is_file() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def assert_installed_from_archive(lab: Lab, run: Run, job: str, venv: str, ref: str) -> None:
    """The job installed lepton-ci from the project archive at `ref` (pip's record of it), not a local path."""
    url = lab.archive.url(ref)
    assert f"lepton-ci: installing lepton-ci[sklearn] @ {url} into {lab.dir / venv}" in run.job_log(job)
    served = [r for r in lab.archive.requests() if r["query"].get("sha") == ref]
    assert served and all(r["status"] == 200 for r in served), lab.archive.requests()
    (direct,) = (lab.dir / venv).glob("lib/python3*/site-packages/lepton_ci-*.dist-info/direct_url.json")
    record = json.loads(direct.read_text())
    assert record["url"] == url and "archive_info" in record, record


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


def test_classic_include_reruns_job_token_failing_gate_and_unreachable_registry(lab: Lab):
    jobs = ["train", "gate", "tag", "deploy", "report", "check-outputs"]
    registry = lab.dir / "registry-classic"
    # A global variable (as in .gitlab-ci.yml) reaches every job of the classic include.
    repo = make_repo(
        lab,
        "classic",
        with_variables(doc_snippet("classic"), LEPTON_CI_REGISTRY=f"file://{registry}") + CHECK_OUTPUTS_JOB,
    )
    iid, venv = 7, "venv-classic"

    first = gcl(lab, repo, iid=iid, venv=venv, cleanup=False)
    assert_pipeline_passed(first, jobs)
    assert_installed_from_archive(lab, first, "train", venv, TEMPLATES_REF)  # the tag the file is published under
    assert "comment created" in first.job_log("report")
    assert [n for n in lab.standin.notes(iid) if STICKY in n["body"]]
    assert registry.is_dir() and any(registry.iterdir()), "the global LEPTON_CI_REGISTRY was not used"
    state = state_dir(lab, repo)
    first_pid, first_port = recorded_server(state)
    assert alive(first_pid) and listening(first_port)

    second = gcl(lab, repo, iid=iid, venv=venv, cleanup=False)
    assert_pipeline_passed(second, jobs)
    assert "lepton-ci: installing" not in second.job_log("train")  # the venv is reused
    assert "comment updated" in second.job_log("report")
    note = assert_sticky_updated_in_place(lab, iid)
    assert "`production` = v1" in note["body"]  # the second run gated against the first one's deployment
    lists = [
        r for r in lab.standin.requests() if r["operation"] == "notes/list" and f"/merge_requests/{iid}/" in r["path"]
    ]
    assert any("page=2" in r["path"] for r in lists), "the sticky note was not looked up past the first page"
    assert {r["auth"] for r in lab.standin.requests()} == {"PRIVATE-TOKEN"}
    assert TOKEN not in first.output + second.output  # masked in every log line

    # Blue/green across pipelines: the second deploy found the first deployment on the runner and stopped it.
    second_pid, second_port = recorded_server(state)
    assert second_pid != first_pid and not alive(first_pid) and alive(second_pid) and listening(second_port)
    # The environment's stop job stops it: nothing of this project is left serving.
    stopped = gcl(lab, repo, "stop-deploy", iid=iid, venv=venv, cleanup=False)
    assert stopped.code == 0 and "stop-deploy" in stopped.passed(), stopped
    assert not alive(second_pid) and not listening(second_port)
    assert servers(lab.home, repo) == []
    assert json.loads((state / "deployment.json").read_text())["status"] == "stopped"

    # Dotenv reports from train, gate, tag and deploy reach a job of a later stage; the gate's name its baseline.
    version = artifact(repo, "tag", "version.json")
    deployment = artifact(repo, "deploy", "deployment.json")
    out = outputs_line(second)
    assert out["version"] == str(version["version"]) == "2"
    assert out["digest"] == version["digest"]
    assert out["verdict"] == "pass"
    assert out["endpoint"] == deployment["endpoint"]
    assert out["run"] == artifact(repo, "train", "run.json")["run_id"]
    assert (out["baseline_source"], out["baseline_ref"], out["baseline_version"]) == ("registry", "production", "1")
    assert re.search(r"^check-outputs\s*> baseline registry production = v1\b", second.output, flags=re.M), second

    # Only CI_JOB_TOKEN: the report job passes, says why nothing was posted, and posts nothing.
    before = len(lab.standin.requests())
    third = gcl(lab, repo, "report", iid=iid, venv=venv, token=None, extra={"CI_JOB_TOKEN": JOB_TOKEN})
    assert third.code == 0 and "report" in third.passed(), third
    log = third.job_log("report")
    assert "CI_JOB_TOKEN" in log and "`api` scope" in log and "LEPTON_CI_GITLAB_TOKEN" in log, log[-3000:]
    assert JOB_TOKEN not in third.output
    assert len(lab.standin.requests()) == before
    assert len([n for n in lab.standin.notes(iid) if STICKY in n["body"]]) == 1

    # A failing gate fails the pipeline; tag and deploy do not run, and the report (when: always) shows why.
    # gitlab-ci-local never starts a when:always job behind skipped jobs, so the report job is run by name,
    # with this run's train and gate artifacts only (as GitLab would give it).
    failing = gcl(lab, repo, iid=iid, venv=venv, extra={"LEPTON_CI_TRAIN_PARAMS": "C=0.0001 max_iter=50"})
    assert failing.code != 0 and {"train"} <= failing.passed(), failing
    assert re.search(r"^\s*FAIL\s+gate", failing.output, flags=re.M), failing
    assert "C=0.0001 accuracy=" in failing.job_log("train")
    assert artifact(repo, "gate", "gate.json")["verdict"] == "fail"  # kept although the job failed
    for job in ("tag", "deploy", "report", "check-outputs"):
        shutil.rmtree(repo / ".gitlab-ci-local" / "artifacts" / job, ignore_errors=True)
    report = gcl(lab, repo, "report", iid=iid, venv=venv)
    assert report.code == 0 and "report" in report.passed(), report
    assert "comment updated" in report.job_log("report")
    note = assert_sticky_updated_in_place(lab, iid)
    assert "gate failed" in note["body"] and "0.8356" in note["body"], note["body"][:600]

    # A registry that cannot be read fails the gate and the pipeline: nothing says "no baseline" or "pass".
    shutil.rmtree(repo / ".gitlab-ci-local" / "artifacts", ignore_errors=True)
    unreachable = gcl(lab, repo, iid=iid, venv=venv, extra={"LEPTON_CI_REGISTRY": "oci://127.0.0.1:9/nothing"})
    assert unreachable.code != 0 and "train" in unreachable.passed(), unreachable
    assert re.search(r"^\s*FAIL\s+gate", unreachable.output, flags=re.M), unreachable
    assert not {"gate", "tag", "deploy", "check-outputs"} & unreachable.passed()
    gate_log = unreachable.job_log("gate")
    assert "127.0.0.1:9" in gate_log and "first run" not in gate_log and "verdict: pass" not in gate_log
    gate_env = repo / ".gitlab-ci-local" / "artifacts" / "gate" / ".lepton" / "gate.env"
    assert not gate_env.exists() or "LEPTON_VERDICT=pass" not in gate_env.read_text()


def test_components_twice(lab: Lab):
    jobs = [f"lepton-{s}" for s in ("train", "gate", "tag", "deploy", "report")] + ["check-outputs"]
    text = doc_snippet("components")
    registry = lab.dir / "registry-components"
    # An empty `registry` input leaves the global LEPTON_CI_REGISTRY to every component's job.
    repo = make_repo(
        lab, "components", with_variables(text, LEPTON_CI_REGISTRY=f"file://{registry}") + CHECK_OUTPUTS_JOB
    )
    iid, venv = 8, "venv-components"
    checker = [sys.executable, str(ROOT / "gitlab-templates" / "check-gitlab-inputs")]
    ok = subprocess.run([*checker, str(repo / ".gitlab-ci.yml")], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr

    first = gcl(lab, repo, iid=iid, venv=venv, cleanup=False)
    assert_pipeline_passed(first, jobs)
    # installed from the component project's archive at the component's own commit ($[[ component.sha ]])
    assert_installed_from_archive(lab, first, "lepton-train", venv, lab.archive.sha)
    assert "C=0.5 accuracy=" in first.job_log("lepton-train")  # the params input reached the training script
    assert registry.is_dir() and any(registry.iterdir()), "the global LEPTON_CI_REGISTRY was not used"
    state = state_dir(lab, repo)
    first_pid, _ = recorded_server(state)
    second = gcl(lab, repo, iid=iid, venv=venv, cleanup=False)
    assert_pipeline_passed(second, jobs)
    assert_sticky_updated_in_place(lab, iid)
    out = outputs_line(second)
    assert out["version"] == "2" and out["verdict"] == "pass" and out["baseline_source"] == "registry"
    assert out["digest"] == artifact(repo, "lepton-tag", "version.json")["digest"]
    second_pid, second_port = recorded_server(state)
    assert not alive(first_pid) and alive(second_pid)
    stopped = gcl(lab, repo, "lepton-stop", iid=iid, venv=venv)
    assert stopped.code == 0 and "lepton-stop" in stopped.passed(), stopped
    assert not alive(second_pid) and not listening(second_port) and servers(lab.home, repo) == []

    # gitlab-ci-local accepts an input the component does not declare; GitLab (and the checker) refuse it.
    (repo / ".gitlab-ci.yml").write_text(
        text.replace('params: "C=0.5 max_iter=300"', 'params: "C=0.5"\n      epochs: 3', 1)
    )
    listed = subprocess.run(
        [str(GCL), "--list", "--no-color", *SCHEMA_FLAGS],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **{k: v for k, v in os.environ.items() if PASSTHROUGH.match(k)},
            "PATH": os.environ.get("PATH", ""),
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": f"url.file://{lab.archive.repo}.insteadOf",
            "GIT_CONFIG_VALUE_0": f"https://{ORIGIN_HOST}:443/{TEMPLATES_PROJECT}.git",
        },
    )
    assert listed.returncode == 0 and "lepton-train" in listed.stdout, listed.stdout + listed.stderr
    bad = subprocess.run([*checker, str(repo / ".gitlab-ci.yml")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        f"{repo / '.gitlab-ci.yml'}: include component $CI_SERVER_FQDN/lepton/ci-templates/train@0.1.0: "
        "unknown input 'epochs' (known inputs: directory, extras, image, job-name, package, params, registry, "
        "requirements, source-project, stage, tags, venv)"
    ]


def test_pipeline_component_in_a_branch_pipeline_finds_the_merge_request(lab: Lab, serving_base: Any):
    """A push pipeline (no CI_MERGE_REQUEST_IID): the report finds the open merge request of the commit.

    With `build: true` the build job rebuilds the tagged version on the session's serving base without a
    Docker Engine and pushes it to "GitLab's container registry" (the input `build-image-repository`, from
    $CI_REGISTRY: lepton.yml names no build.image): the session registry's storage behind a registry that
    wants a password, which the job takes from CI_REGISTRY_USER/PASSWORD (registry-login).
    """
    jobs = [f"lepton-{s}" for s in ("train", "gate", "tag", "build", "deploy", "report")]
    used, ignored = lab.dir / "registry-pipeline-input", lab.dir / "registry-pipeline-global"
    repository = serving_base.repository("acme/pipeline/serve").split("/", 1)[1]
    gitlab_registry = RegistryServer(lab.dir / "gitlab-container-registry", htpasswd=True)
    gitlab_registry.root = serving_base.registry.root  # the same storage, behind basic auth
    image = f"{gitlab_registry.host}/{repository}"
    text = doc_snippet("pipeline").replace(
        "extras: sklearn",
        f"extras: sklearn\n      registry: file://{used}\n      build: true\n      build-image-tags: gitlab-e2e\n"
        f'      build-image-repository: "$CI_REGISTRY/{repository}"',
        1,
    )
    repo = make_repo(
        lab,
        "pipeline",
        with_variables(text, LEPTON_CI_REGISTRY=f"file://{ignored}"),
        lepton_yml=f"build:\n  base_image: {serving_base.base_image}\n",
    )
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout
    iid = 9
    standin = StandIn(lab.dir, "gitlab-standin-branch", ("--mr-for-commit", f"{iid}:{sha.strip()}:feature/smaller-c"))
    registry_login = {"CI_REGISTRY": gitlab_registry.host, "CI_REGISTRY_USER": USER, "CI_REGISTRY_PASSWORD": PASSWORD}
    try:
        gitlab_registry.start()
        run = gcl(lab, repo, iid=None, venv="venv-components", standin=standin, extra=registry_login)
        assert_pipeline_passed(run, jobs)
        assert "candidate -> v1, staging -> v1" in run.job_log("lepton-tag")
        notes = [n for n in standin.notes(iid) if STICKY in n["body"]]
        assert len(notes) == 1 and "workflow=lepton-report" in notes[0]["body"]
        lookups = [r for r in standin.requests() if r["operation"] == "commits/merge_requests"]
        assert lookups and sha.strip() in lookups[0]["path"]
        assert standin.violations() == []
    finally:
        standin.stop()
        gitlab_registry.stop()
    assert artifact(repo, "lepton-deploy", "deployment.json")["status"] == "healthy"
    # A non-empty input wins over the global variable.
    assert used.is_dir() and any(used.iterdir()) and not ignored.exists()

    # The build: model-only on the base, pushed under v1, sha-<commit> and the input's tag; the image the
    # registry holds is the one image.json and the dotenv report (LEPTON_IMAGE*) name.
    record = artifact(repo, "lepton-build", "image.json")
    env_file = repo / ".gitlab-ci-local" / "artifacts" / "lepton-build" / ".lepton" / "build.env"
    dotenv = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    pushed = serving_base.manifest_digest(repository, "v1")
    assert record["mode"] == "model-only" and record["pushed"] is True, record
    assert pushed and pushed == record["digest"] == dotenv["LEPTON_IMAGE_DIGEST"]
    assert dotenv["LEPTON_IMAGE"] == record["image"] == f"{image}@{pushed}"
    assert dotenv["LEPTON_BUILD_MODE"] == "model-only"
    assert record["tags"] == ["v1", f"sha-{sha.strip()[:12]}", "gitlab-e2e"]
    assert serving_base.manifest_digest(repository, "gitlab-e2e") == pushed
    log = run.job_log("lepton-build")
    assert f"lepton-ci: registry credentials for {gitlab_registry.host}: CI_REGISTRY_USER ({USER})" in log
    assert PASSWORD not in run.output + log


def test_setup_script_without_git_and_a_venv_restored_elsewhere(lab: Lab, tmp_path: Path):
    """The setup as a Docker runner runs it (sh, no git, only CI variables): it installs from the archive
    with pip alone, says in one line that git is missing, and rebuilds a venv the cache put at another path."""
    setup = yaml.safe_load((ROOT / "gitlab-templates" / "lepton.yml").read_text())[".lepton-setup"]["before_script"][0]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    python = Path(sys.base_prefix) / "bin" / "python3"
    (bindir / "python3").symlink_to(python)
    for tool in ("sh", "sed", "cat", "cksum", "mkdir", "tar", "gzip"):
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)
    assert shutil.which("git", path=str(bindir)) is None
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project)

    def setup_run(venv: Path) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if PASSTHROUGH.match(k)}
        env.update(
            PATH=str(bindir),
            HOME=str(lab.home),
            CI_PROJECT_DIR=str(project),
            CI_API_V4_URL=lab.archive.api,
            LEPTON_CI_VENV=str(venv),
            LEPTON_CI_EXTRAS="sklearn",
            PIP_CACHE_DIR=str(lab.dir / "pip-cache"),
        )
        return subprocess.run(["sh", "-c", setup], cwd=project, env=env, capture_output=True, text=True, timeout=300)

    first = setup_run(tmp_path / "builds-0" / ".lepton-venv")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert "lepton-ci: installing lepton-ci[sklearn] @ " + lab.archive.url(TEMPLATES_REF) in first.stdout
    warnings = [line for line in first.stderr.splitlines() if "git" in line]
    assert len(warnings) == 1 and "no git" in warnings[0] and "apt-get install -y git" in warnings[0], first.stderr
    again = setup_run(tmp_path / "builds-0" / ".lepton-venv")
    assert again.returncode == 0 and "installing" not in again.stdout, again.stdout

    # The cache restores the venv into another build directory: its scripts still name the old path.
    (tmp_path / "builds-1").mkdir()
    (tmp_path / "builds-0" / ".lepton-venv").rename(tmp_path / "builds-1" / ".lepton-venv")
    moved = setup_run(tmp_path / "builds-1" / ".lepton-venv")
    assert moved.returncode == 0, moved.stdout[-2000:] + moved.stderr[-3000:]
    assert "lepton-ci: installing" in moved.stdout  # rebuilt, not reused with a broken interpreter path
    assert re.search(r"^lepton-ci \S+", moved.stdout, flags=re.M), moved.stdout
