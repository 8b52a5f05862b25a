"""`lepton-ci report --post` as a real subprocess against the GitHub and GitLab stand-ins.

Every run in this module uses a canary token and `run()` asserts that the canary appears nowhere: not in
stdout, not on stderr (except in the one `::add-mask::` line, which goes to stderr: the runner reads
workflow commands there, and stdout is the report), the job summary, the step outputs, or anything the
stand-in received in a path or body. Retries are made fast with LEPTON_CI_HTTP_BACKOFF; Retry-After is 1 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.e2e.helpers import Result, assert_one_line_error, make_project
from tests.support.github_standin import GitHubStandIn, require_spec
from tests.support.gitlab_standin import GitLabStandIn
from tests.support.keys import PRIVATE_PEM

CANARY = "ghp_CANARY0lepton0ci0canary0token0000000"
GL_CANARY = "glpat-CANARY0lepton0ci0canary0001"
ALL_CANARIES = (CANARY, GL_CANARY, "CANARY0lepton")
REPO = "octo/repo"
HEAD = "c0ffee0123456789abcdef0123456789abcdef01"
KEY = PRIVATE_PEM
CONFIG = """\
model:
  name: toy
train:
  command: {python} train.py
  params: {{acc: 0.9}}
  metrics: [metrics.json]
  artifacts: [model.bin]
gate:
  rules:
    - metric: eval.loss
      direction: lower
      max: 0.5
    - metric: eval.accuracy
      min: {min_acc}
"""
ACCURACY_RULE_LINE = 13


def _clean_env() -> dict[str, str]:
    """The test process's environment without anything a real CI (or a developer) set for a forge."""
    drop = ("GITHUB_", "GITLAB_", "CI_", "LEPTON_CI_", "GH_", "RUNNER_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) and k not in ("CI", "ACTIONS_STEP_DEBUG")}
    env["LEPTON_CI_HTTP_BACKOFF"] = "0.01"
    env["LEPTON_CI_HTTP_TIMEOUT"] = "5"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def _project(root: Path, min_acc: float) -> Path:
    make_project(root, CONFIG.replace("{min_acc}", str(min_acc)))
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "init"],
                   cwd=root, check=True)
    env = {**_clean_env(), "LEPTON_CI_SIGNING_KEY": KEY}
    for step in ("train", "gate"):
        r = subprocess.run([sys.executable, "-m", "lepton_ci.cli", step], cwd=root, env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode in (0, 1) and (root / ".lepton").is_dir(), r.stderr
    return root


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose gate failed (accuracy 0.9 under min 0.95): annotations, failure status."""
    return _project(tmp_path_factory.mktemp("forge-cli") / "failing", 0.95)


@pytest.fixture(scope="module")
def passing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _project(tmp_path_factory.mktemp("forge-cli") / "passing", 0.5)


@pytest.fixture(scope="module")
def spec() -> Path:
    return require_spec()


@pytest.fixture()
def gh(spec: Path) -> Iterator[GitHubStandIn]:
    with GitHubStandIn(spec, repo=REPO, tokens={CANARY}, prs={7}) as s:
        yield s


@dataclass
class Run:
    result: Result
    summary: str
    outputs: str

    @property
    def code(self) -> int:
        return self.result.code


def event_file(tmp: Path, number: int = 7, head_repo: str | None = REPO) -> Path:
    event = {"action": "synchronize", "number": number, "pull_request": {
        "number": number, "head": {"sha": HEAD, "ref": "feature", "repo": {"full_name": head_repo} if head_repo else None},
        "base": {"sha": "b" * 40, "ref": "main", "repo": {"full_name": REPO}}}}
    path = tmp / f"event-{number}-{head_repo or 'deleted'}.json".replace("/", "_")
    path.write_text(json.dumps(event))
    return path


def github_env(gh: GitHubStandIn, project: Path, tmp: Path, *, token: str | None = CANARY, number: int = 7,
               head_repo: str | None = REPO, **extra: str) -> dict[str, str]:
    env = {"GITHUB_ACTIONS": "true", "GITHUB_API_URL": gh.url, "GITHUB_SERVER_URL": gh.origin,
           "GITHUB_REPOSITORY": REPO, "GITHUB_EVENT_NAME": "pull_request", "GITHUB_SHA": "d" * 40,
           "GITHUB_EVENT_PATH": str(event_file(tmp, number, head_repo)), "GITHUB_WORKFLOW": "ml",
           "GITHUB_RUN_ID": "42", "GITHUB_WORKSPACE": str(project), "GITHUB_REF": f"refs/pull/{number}/merge",
           "GITHUB_STEP_SUMMARY": str(tmp / "summary.md"), "GITHUB_OUTPUT": str(tmp / "output")}
    if token:
        env["GITHUB_TOKEN"] = token
    env.update(extra)
    return env


def run(project: Path, env: dict[str, str], *args: str, standins: tuple[Any, ...] = (), debug: bool = False) -> Run:
    """One `lepton-ci report --post`, then the canary check over everything it produced."""
    tmp_summary = Path(env.get("GITHUB_STEP_SUMMARY", "/nonexistent"))
    tmp_output = Path(env.get("GITHUB_OUTPUT", "/nonexistent"))
    before_summary = tmp_summary.read_text() if tmp_summary.is_file() else ""
    before_output = tmp_output.read_text() if tmp_output.is_file() else ""
    cmd = [sys.executable, "-m", "lepton_ci.cli", *(["--debug"] if debug else []), "report", "--post", *args]
    proc = subprocess.run(cmd, cwd=project, env={**_clean_env(), **env}, capture_output=True, text=True, timeout=120)
    r = Run(Result(proc.returncode, proc.stdout, proc.stderr),
            tmp_summary.read_text()[len(before_summary):] if tmp_summary.is_file() else "",
            tmp_output.read_text()[len(before_output):] if tmp_output.is_file() else "")
    masks = {f"::add-mask::{line.strip()}" for k in ("GITHUB_TOKEN", "LEPTON_CI_GITHUB_TOKEN") if env.get(k)
             for line in env[k].splitlines() if line.strip()}  # one per line of a (broken) multi-line token
    assert_no_canary(r, masks, *standins)
    return r


def assert_no_canary(r: Run, masks: set[str], *standins: Any) -> None:
    """The canary nowhere but in the `::add-mask::` line on stderr, which must come before anything else;
    stdout (the report) has no workflow command at all."""
    assert "::add-mask::" not in r.result.out, ("::add-mask:: on stdout, where the report goes", r.result.out)
    err_lines = r.result.err.splitlines()
    for canary in ALL_CANARIES:
        assert canary not in r.result.out, ("canary on stdout", r.result.out)
        leaks = [line for line in err_lines if canary in line and line not in masks]
        assert not leaks, ("canary on stderr", leaks)
        assert canary not in r.summary, "canary in the job summary"
        assert canary not in r.outputs, "canary in the step outputs"
        for s in standins:
            assert canary not in s.bodies_seen(), f"canary in what {s.name} received"
    first_other = next((i for i, x in enumerate(err_lines) if x.startswith(("::", "lepton-ci:")) and x not in masks),
                       len(err_lines))
    for line in masks & set(err_lines):  # printed before any other workflow command or log line of ours
        assert err_lines.index(line) < first_other, err_lines


def sticky(s: Any, number: int) -> list[dict[str, Any]]:
    return [c for c in s.comments(number) if c["body"].startswith("<!-- lepton-ci:sticky model=toy")]


# ---- GitHub --------------------------------------------------------------------------------------------

def test_post_rerun_summary_outputs_annotations_and_status(gh: GitHubStandIn, failing: Path, tmp_path: Path) -> None:
    gh.seed(7, 240)
    env = github_env(gh, failing, tmp_path)
    first = run(failing, env, standins=(gh,))
    assert first.code == 0, first.result
    out = first.result.err.splitlines()  # workflow commands: stderr
    assert f"::add-mask::{CANARY}" in out
    assert out.index(f"::add-mask::{CANARY}") < out.index(next(line for line in out if line.startswith("::error")))
    [error] = [line for line in out if line.startswith("::error")]
    assert error.startswith(f"::error file=lepton.yml,line={ACCURACY_RULE_LINE},title=lepton-ci gate%3A eval.accuracy min::")
    assert "lepton-ci: comment created" in first.result.err
    [c] = sticky(gh, 7)
    assert "gate failed" in c["body"] and "workflow=ml" in c["body"]
    assert "## ❌ lepton-ci · `toy` · gate failed" in first.summary
    assert f"comment-url={c['html_url']}\n" in first.outputs and "comment-action=created\n" in first.outputs
    assert [(s["state"], s["sha"], s["context"]) for s in gh.statuses] == [("failure", HEAD, "lepton-ci/gate (toy)")]
    assert gh.statuses[0]["target_url"] == f"{gh.origin}/{REPO}/actions/runs/42"

    for _ in range(2):  # reruns: the same comment, found on page 3, never a second one
        again = run(failing, env, standins=(gh,))
        assert again.code == 0 and "lepton-ci: comment unchanged" in again.result.err, again.result
    assert len(sticky(gh, 7)) == 1 and len(gh.calls("issues/create-comment")) == 1
    assert {r["query"].get("page") for r in gh.calls("issues/list-comments")} >= {"2", "3"}
    gh.assert_clean()


def test_passing_gate_sets_a_success_status_and_a_separate_comment_per_workflow(gh: GitHubStandIn, passing: Path,
                                                                                  tmp_path: Path) -> None:
    env = github_env(gh, passing, tmp_path)
    assert run(passing, env, standins=(gh,)).code == 0
    assert run(passing, env, "--workflow", "nightly", standins=(gh,)).code == 0
    assert [s["state"] for s in gh.statuses] == ["success", "success"]
    bodies = [c["body"].splitlines()[0] for c in sticky(gh, 7)]
    assert bodies == ["<!-- lepton-ci:sticky model=toy workflow=ml -->", "<!-- lepton-ci:sticky model=toy workflow=nightly -->"]
    gh.assert_clean()


def test_enterprise_server_api_url(spec: Path, passing: Path, tmp_path: Path) -> None:
    with GitHubStandIn(spec, repo=REPO, tokens={CANARY}, prefix="/api/v3") as ghe:
        env = github_env(ghe, passing, tmp_path, GITHUB_SERVER_URL=ghe.origin)
        r = run(passing, env, standins=(ghe,))
        assert r.code == 0, r.result
        assert len(sticky(ghe, 7)) == 1 and all(q["route"].startswith("/api/v3/") for q in ghe.requests)
        ghe.assert_clean()


@pytest.mark.parametrize(("setup", "needles"), [
    ({"number": 8}, ["pull request #8 not found in octo/repo"]),
    ({"token": "ghp_CANARY0lepton0wrong0token000000000"}, ["GitHub rejected GITHUB_TOKEN (401 Bad credentials)"]),
    ({"fault": 403}, ["cannot comment on the pull request: GITHUB_TOKEN lacks the permission in octo/repo", "permissions: pull-requests: write"]),
    ({"fault": 422}, ["cannot comment on the pull request: GitHub refused the request", "HTTP 422"]),
], ids=["404", "401", "403", "422"])
def test_api_errors_exit_2_with_one_clear_line(gh: GitHubStandIn, failing: Path, tmp_path: Path,
                                              setup: dict[str, Any], needles: list[str]) -> None:
    if "fault" in setup:
        gh.fail("issues/create-comment", setup["fault"])
    env = github_env(gh, failing, tmp_path, number=setup.get("number", 7), token=setup.get("token", CANARY))
    r = run(failing, env, standins=(gh,))
    assert_one_line_error(r.result, 2, *needles)
    assert "gate failed" in r.summary  # the job summary was written before posting
    assert not sticky(gh, 7)
    assert not [x for x in gh.violations], gh.violations


def test_5xx_storm_then_success_and_5xx_forever(gh: GitHubStandIn, failing: Path, tmp_path: Path) -> None:
    env = github_env(gh, failing, tmp_path)
    gh.fail("issues/create-comment", 502, times=2)
    gh.fail("issues/list-comments", 503, times=2)
    r = run(failing, env, standins=(gh,))
    assert r.code == 0 and "lepton-ci: comment created" in r.result.err, r.result
    assert "HTTP 503; retrying" in r.result.err and "looking for the comment" in r.result.err
    assert len(sticky(gh, 7)) == 1

    gh.fail("issues/create-comment", 500, times=100)
    forever = run(failing, {**env, "LEPTON_CI_HTTP_RETRIES": "2"}, "--workflow", "other", standins=(gh,))
    assert_one_line_error(forever.result, 2, "cannot post the comment", "HTTP 500", "gave up after 3 attempts")
    assert len(gh.calls("issues/create-comment")) == 3 + 3
    assert len(sticky(gh, 7)) == 1


def test_429_retry_after_and_connection_reset(gh: GitHubStandIn, failing: Path, tmp_path: Path) -> None:
    env = github_env(gh, failing, tmp_path)
    gh.fail("issues/list-comments", 429, retry_after=1)
    gh.fail("issues/create-comment", reset=True)
    gh.fail("issues/create-comment", reset_after=True)
    start = time.monotonic()
    r = run(failing, env, standins=(gh,))
    assert r.code == 0, r.result
    assert time.monotonic() - start >= 1.0
    assert "HTTP 429" in r.result.err and "retrying in 1.0s" in r.result.err
    assert len(sticky(gh, 7)) == 1 and len(gh.calls("issues/create-comment")) == 2
    gh.assert_clean()


@pytest.mark.parametrize("head_repo", ["someone/fork", None], ids=["fork", "deleted-fork"])
def test_fork_pull_request_falls_back_to_the_summary(gh: GitHubStandIn, failing: Path, tmp_path: Path,
                                                     head_repo: str | None) -> None:
    env = github_env(gh, failing, tmp_path, head_repo=head_repo, LEPTON_CI_GITHUB_TOKEN=CANARY)
    r = run(failing, env, standins=(gh,))
    assert r.code == 0, r.result
    assert any(line.startswith("::notice title=lepton-ci::comment not posted: pull request from the fork")
               for line in r.result.err.splitlines()), r.result.err
    assert "lepton-ci: notice: comment not posted: pull request from the fork" in r.result.err
    assert "gate failed" in r.summary and "read-only" in r.summary
    assert gh.requests == []


def test_missing_token_falls_back_to_the_summary(gh: GitHubStandIn, failing: Path, tmp_path: Path) -> None:
    r = run(failing, github_env(gh, failing, tmp_path, token=None), standins=(gh,))
    assert r.code == 0, r.result
    assert "comment not posted: no token: set one of LEPTON_CI_GITHUB_TOKEN, GITHUB_TOKEN, GH_TOKEN" in r.result.err
    assert "::notice title=lepton-ci::comment not posted: no token" in r.result.err
    assert "gate failed" in r.summary and gh.requests == []


def test_debug_logs_requests_masked_and_never_the_token(gh: GitHubStandIn, failing: Path, tmp_path: Path) -> None:
    env = github_env(gh, failing, tmp_path)
    gh.fail("issues/list-comments", 502)
    ok = run(failing, env, standins=(gh,), debug=True)
    assert ok.code == 0, ok.result
    assert "lepton-ci: debug: GET" in ok.result.err and '"Authorization": "Bearer ***"' in ok.result.err
    gh.fail("issues/update-comment", 401)
    gh.fail("issues/create-comment", 401)
    bad = run(failing, env, "--workflow", "debug-error", standins=(gh,), debug=True)
    assert bad.code != 0 and "Traceback" in bad.result.err and "ForgeError" in bad.result.err
    gh.fail("issues/list-comments", 500, times=10)
    bad = run(failing, {**env, "LEPTON_CI_DEBUG": "1", "LEPTON_CI_HTTP_RETRIES": "1"}, standins=(gh,))
    assert bad.code != 0 and "lepton-ci: debug: GET" in bad.result.err and "HTTP 500" in bad.result.err


# ---- GitLab --------------------------------------------------------------------------------------------

def gitlab_env(gl: GitLabStandIn, project: Path, tmp: Path, *, token: str | None = GL_CANARY, **extra: str) -> dict[str, str]:
    env = {"GITLAB_CI": "true", "CI_SERVER_URL": gl.origin, "CI_API_V4_URL": gl.url, "CI_PROJECT_ID": "4242",
           "CI_PROJECT_PATH": "group/proj", "CI_PROJECT_URL": f"{gl.origin}/group/proj", "CI_MERGE_REQUEST_IID": "3",
           "CI_COMMIT_SHA": HEAD, "CI_JOB_NAME": "lepton-report", "CI_PIPELINE_SOURCE": "merge_request_event",
           "CI_PIPELINE_URL": f"{gl.origin}/group/proj/-/pipelines/9", "CI_PROJECT_DIR": str(project),
           "LEPTON_CI_DOTENV": str(tmp / "report.env")}
    if token:
        env["LEPTON_CI_GITLAB_TOKEN"] = token
    env.update(extra)
    return env


def test_gitlab_self_managed_note_rerun_and_status(failing: Path, tmp_path: Path) -> None:
    with GitLabStandIn(tokens={GL_CANARY}, mrs={3}, any_project=False) as gl:
        gl.seed(3, 230)
        env = gitlab_env(gl, failing, tmp_path)
        first = run(failing, env, standins=(gl,))
        assert first.code == 0, first.result
        assert "::" not in first.result.out + first.result.err  # no GitHub workflow commands on GitLab
        [n] = sticky(gl, 3)
        assert f"lepton-ci: comment created: {gl.origin}/group/proj/-/merge_requests/3#note_{n['id']}" in first.result.err
        gl.fail("notes/list", 502)
        gl.fail("notes/create", reset_after=True)
        second = run(failing, env, "--workflow", "second", standins=(gl,))
        assert second.code == 0, second.result
        assert len(sticky(gl, 3)) == 2 and len(gl.calls("notes/create")) == 2
        assert [s["status"] for s in gl.statuses] == ["failed", "failed"]
        env_file = (tmp_path / "report.env").read_text()
        assert f"LEPTON_COMMENT_URL={gl.origin}/group/proj/-/merge_requests/3#note_" in env_file
        assert GL_CANARY not in env_file
        gl.assert_clean()


def test_gitlab_job_token_only_explains_the_api_scope(failing: Path, tmp_path: Path) -> None:
    with GitLabStandIn() as gl:
        env = gitlab_env(gl, failing, tmp_path, token=None, CI_JOB_TOKEN="glcbt-64_CANARY0lepton0jobtoken")
        r = run(failing, env, standins=(gl,))
        assert r.code == 0, r.result
        assert "CI_JOB_TOKEN" in r.result.err and "`api` scope" in r.result.err and "LEPTON_CI_GITLAB_TOKEN" in r.result.err
        assert gl.requests == []


@pytest.mark.parametrize(("fault", "needles"), [
    (401, ["GitLab rejected LEPTON_CI_GITLAB_TOKEN (401)", "`api` scope"]),
    (403, ["cannot post a merge request note: LEPTON_CI_GITLAB_TOKEN lacks the permission", "`api` scope", "LEPTON_CI_GITLAB_TOKEN"]),
    (404, ["merge request !3 not found in project 4242"]),
])
def test_gitlab_errors_exit_2(failing: Path, tmp_path: Path, fault: int, needles: list[str]) -> None:
    with GitLabStandIn() as gl:
        gl.fail("notes/create", fault)
        r = run(failing, gitlab_env(gl, failing, tmp_path), standins=(gl,))
        assert_one_line_error(r.result, 2, *needles)


# ---- malformed API URLs and tokens: one line, exit 2, never an internal error ----------------------------

@pytest.mark.parametrize(("forge", "extra", "needles"), [
    ("github", {"GITHUB_API_URL": "htp://x"}, ["GITHUB_API_URL", "must start with http:// or https://, not htp://"]),
    ("github", {"GITHUB_API_URL": "http://[::1"}, ["GITHUB_API_URL", "cannot be parsed"]),
    ("github", {"GITHUB_API_URL": "", "GITHUB_SERVER_URL": "ghe.example"}, ["GITHUB_SERVER_URL", "http://"]),
    ("github", {"GITHUB_TOKEN": CANARY + "\nX-Injected: 1"}, ["not a valid HTTP header value", "line break"]),
    ("github", {"GITHUB_TOKEN": CANARY + "\n"}, ["not a valid HTTP header value"]),
    ("gitlab", {"CI_API_V4_URL": "htp://gitlab.example/api/v4"}, ["CI_API_V4_URL", "http:// or https://"]),
    ("gitlab", {"CI_API_V4_URL": "https://gitlab.example:99999/api/v4"}, ["CI_API_V4_URL", "cannot be parsed"]),
    ("gitlab", {"LEPTON_CI_GITLAB_TOKEN": GL_CANARY + "\r\nX-Injected: 1"}, ["not a valid HTTP header value"]),
], ids=["scheme", "ipv6", "server-url", "token-newline", "token-trailing-newline", "gitlab-scheme", "gitlab-port",
        "gitlab-token-crlf"])
def test_malformed_api_url_or_token_is_one_line_exit_2(spec: Path, failing: Path, tmp_path: Path, forge: str,
                                                       extra: dict[str, str], needles: list[str]) -> None:
    if forge == "github":
        with GitHubStandIn(spec, repo=REPO, tokens={CANARY}, prs={7}) as s:
            env = github_env(s, failing, tmp_path, **extra)
            r = run(failing, env, standins=(s,))
    else:
        with GitLabStandIn(tokens={GL_CANARY}, mrs={3}) as s:
            r = run(failing, gitlab_env(s, failing, tmp_path, **extra), standins=(s,))
    assert_one_line_error(r.result, 2, *needles)
    assert "internal error" not in r.result.err and "X-Injected" not in r.result.out
    assert not [q for q in s.requests if "x-injected" in q.get("headers", {})]


def test_report_post_stdout_is_the_report_only(gh: GitHubStandIn, failing: Path, tmp_path: Path) -> None:
    """`lepton-ci report --post > report.md`: the file gets the report and no workflow command or token."""
    r = run(failing, github_env(gh, failing, tmp_path), standins=(gh,))
    assert r.code == 0, r.result
    assert "## ❌ lepton-ci · `toy` · gate failed" in r.result.out.splitlines()[:3], r.result.out[:300]
    assert not [line for line in r.result.out.splitlines() if line.startswith("::")]
    assert f"::add-mask::{CANARY}" in r.result.err.splitlines()


def test_report_output_file_is_private(failing: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    proc = subprocess.run([sys.executable, "-m", "lepton_ci.cli", "report", "-o", str(out)], cwd=failing,
                          env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_mode & 0o777 == 0o600 and "gate failed" in out.read_text()
