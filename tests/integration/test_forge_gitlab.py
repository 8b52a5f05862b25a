"""lepton_ci.forge against the GitLab notes stand-in: real HTTP, requests checked against GitLab's
documented contract, waits injected so retries cost no time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from lepton_ci.forge.detect import ForgeContext
from lepton_ci.forge.gitlab import GitLabAPI
from lepton_ci.forge.http import ForgeError
from lepton_ci.forge.publish import post_sticky, publish, sticky_marker
from lepton_ci.records import GateRecord
from tests.support.gitlab_standin import GitLabStandIn

TOKEN = "glpat-libraryTestToken0000001"
SHA = "89abcdef0123456789abcdef0123456789abcdef"
MARKER = sticky_marker("toy", "lepton-report")


class Clock:
    def __init__(self) -> None:
        self.waits: list[float] = []
        self.logs: list[str] = []

    def options(self, **kw: Any) -> dict[str, Any]:
        return {"sleep": self.waits.append, "log": self.logs.append, "backoff_s": 0.01, "timeout_s": 5, **kw}


@pytest.fixture()
def gl() -> Iterator[GitLabStandIn]:
    with GitLabStandIn(project_id=4242, project_path="group/sub/proj", any_project=False, mrs={3, 4}) as s:
        yield s


@pytest.fixture()
def clock() -> Clock:
    return Clock()


def api(gl: GitLabStandIn, clock: Clock, project: str = "4242", token: str = TOKEN, **kw: Any) -> GitLabAPI:
    return GitLabAPI(gl.url, project, token, token_source="LEPTON_CI_GITLAB_TOKEN", **clock.options(**kw))


def ours(gl: GitLabStandIn, iid: int = 3, marker: str = MARKER) -> list[dict[str, Any]]:
    return [n for n in gl.notes(iid) if n["body"].startswith(marker)]


def test_standin_checks_the_documented_contract(gl: GitLabStandIn) -> None:
    notes = f"{gl.url}/projects/4242/merge_requests/3/notes"
    h = {"PRIVATE-TOKEN": TOKEN}
    assert requests.get(notes, params={"per_page": 101}, headers=h, timeout=5).status_code == 400
    assert requests.get(notes, params={"sort": "up"}, headers=h, timeout=5).status_code == 400
    assert requests.get(notes, params={"colour": "red"}, headers=h, timeout=5).status_code == 400
    assert requests.post(notes, json={"text": "x"}, headers=h, timeout=5).status_code == 400
    assert requests.post(notes, json={"body": ""}, headers=h, timeout=5).status_code == 400
    assert requests.get(notes, timeout=5).status_code == 401
    assert requests.post(f"{gl.url}/projects/4242/statuses/{SHA}", json={"state": "failure"}, headers=h,
                         timeout=5).status_code == 400
    assert requests.get(f"{gl.url}/projects/4242/issues/3/notes", headers=h, timeout=5).status_code == 404
    assert len(gl.violations) == 8, gl.violations
    # Not contract violations: a wrong project, a job token writing, a missing MR.
    assert requests.get(f"{gl.url}/projects/1/merge_requests/3/notes", headers=h, timeout=5).status_code == 404
    assert requests.post(notes, json={"body": "x"}, headers={"JOB-TOKEN": "job"}, timeout=5).status_code == 403
    assert requests.get(notes, headers={"JOB-TOKEN": "job"}, timeout=5).status_code == 200
    assert requests.get(f"{gl.url}/projects/4242/merge_requests/9/notes", headers=h, timeout=5).status_code == 404
    assert len(gl.violations) == 8, gl.violations[8:]


def test_standin_pagination_headers(gl: GitLabStandIn) -> None:
    gl.seed(3, 45)
    r = requests.get(f"{gl.url}/projects/4242/merge_requests/3/notes", params={"per_page": 20, "page": 2},
                     headers={"PRIVATE-TOKEN": TOKEN}, timeout=5)
    assert r.headers["x-page"] == "2" and r.headers["x-next-page"] == "3" and r.headers["x-prev-page"] == "1"
    assert r.headers["x-total"] == "45" and r.headers["x-total-pages"] == "3"
    rels = {x["rel"]: x["url"] for x in requests.utils.parse_header_links(r.headers["Link"])}
    assert set(rels) == {"prev", "next", "first", "last"} and rels["next"].endswith("per_page=20&page=3")
    assert [n["id"] for n in r.json()] == sorted((n["id"] for n in r.json()), reverse=True)  # GitLab: newest first
    gl.assert_clean()


def test_sticky_note_created_once_updated_in_place_and_found_on_page_three(gl: GitLabStandIn, clock: Clock) -> None:
    gl.seed(3, 220)
    a = api(gl, clock)
    first = post_sticky(a, 3, "report v1\n", MARKER)
    gl.seed(3, 40)
    for i in range(2, 5):
        assert post_sticky(a, 3, f"report v{i}\n", MARKER) == {"action": "updated", "id": first["id"], "url": None}
    [n] = ours(gl)
    assert n["id"] == first["id"] and n["body"].endswith("report v4\n")
    assert len(gl.calls("notes/create")) == 1 and len(gl.calls("notes/update")) == 3
    lists = gl.calls("notes/list")
    assert {r["query"]["sort"] for r in lists} == {"asc"} and max(int(r["query"].get("page", 1)) for r in lists) == 3
    gl.assert_clean()


def test_project_path_is_url_encoded(gl: GitLabStandIn, clock: Clock) -> None:
    post_sticky(api(gl, clock, project="group/sub/proj"), 4, "r\n", MARKER)
    assert gl.requests[-1]["path"] == "/api/v4/projects/group%2Fsub%2Fproj/merge_requests/4/notes"
    assert len(ours(gl, 4)) == 1
    gl.assert_clean()


def test_two_models_two_workflows(gl: GitLabStandIn, clock: Clock) -> None:
    a = api(gl, clock)
    for _ in range(2):
        for model, wf in [("toy", "a"), ("toy", "b"), ("big", "a")]:
            post_sticky(a, 3, f"{model}/{wf}\n", sticky_marker(model, wf))
    assert len(gl.notes(3)) == 3


@pytest.mark.parametrize(("status", "needles"), [
    (401, ["GitLab rejected LEPTON_CI_GITLAB_TOKEN (401)", "`api` scope"]),
    (403, ["cannot post a merge request note: LEPTON_CI_GITLAB_TOKEN lacks the permission", "`api` scope", "CI_JOB_TOKEN cannot post notes",
           "LEPTON_CI_GITLAB_TOKEN"]),
])
def test_auth_errors_name_the_api_scope(gl: GitLabStandIn, clock: Clock, status: int, needles: list[str]) -> None:
    gl.fail("notes/create", status)
    with pytest.raises(ForgeError) as e:
        post_sticky(api(gl, clock), 3, "r", MARKER)
    for needle in needles:
        assert needle in str(e.value)


def test_read_api_token_is_refused_with_the_scope_named(clock: Clock) -> None:
    with GitLabStandIn(read_only_tokens={"glpat-readonly-000000"}) as s:
        with pytest.raises(ForgeError) as e:
            post_sticky(api(s, clock, token="glpat-readonly-000000"), 3, "r", MARKER)
        assert e.value.status == 403 and "insufficient_scope" in str(e.value) and "`api` scope" in str(e.value)


def test_mr_not_found(gl: GitLabStandIn, clock: Clock) -> None:
    with pytest.raises(ForgeError, match=r"merge request !99 not found in project 4242"):
        post_sticky(api(gl, clock), 99, "r", MARKER)


def test_faults_storm_429_reset_and_ambiguous_create(gl: GitLabStandIn, clock: Clock) -> None:
    gl.fail("notes/list", 500, times=2)
    gl.fail("notes/list", 429, retry_after=4)
    gl.fail("notes/list", reset=True)
    gl.fail("notes/create", 503, times=2)
    gl.fail("notes/create", reset_after=True)  # created, but the answer was lost
    r = post_sticky(api(gl, clock), 3, "report\n", MARKER)
    assert r["action"] == "created" and len(ours(gl)) == 1
    assert 4.0 in clock.waits
    assert len(gl.calls("notes/create")) == 3
    gl.fail("notes/update", 502, times=50)
    with pytest.raises(ForgeError, match=r"failed after 3 attempts \(HTTP 502\)"):
        post_sticky(api(gl, clock, max_retries=2), 3, "report 2\n", MARKER)
    gl.assert_clean()


def test_huge_note_is_truncated_to_a_million(gl: GitLabStandIn, clock: Clock) -> None:
    report = "| row | value |\n" * 90_000
    assert len(report) > 1_000_000
    post_sticky(api(gl, clock), 3, report, MARKER)
    [n] = ours(gl)
    assert len(n["body"]) <= 1_000_000 and "Report truncated to fit the 1,000,000-character comment limit" in n["body"]
    gl.assert_clean()


def test_publish_posts_note_and_status_with_note_url(gl: GitLabStandIn, clock: Clock, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv = tmp_path / "report.env"
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.setenv("LEPTON_CI_DOTENV", str(dotenv))
    ctx = ForgeContext(kind="gitlab", api_url=gl.url, repository="4242", pr_number=3, head_sha=SHA, token=TOKEN,
                       token_source="LEPTON_CI_GITLAB_TOKEN", can_write=True, workflow="lepton-report",
                       run_url="https://gitlab.example.com/group/sub/proj/-/pipelines/1",
                       project_url="https://gitlab.example.com/group/sub/proj")
    gate = GateRecord(model="toy", verdict="fail", results=[{"metric": "acc", "rule": "min", "passed": False, "reason": "low"}])
    lines: list[str] = []
    res = publish("r\n", ctx, model="toy", gate=gate, emit=lines.append, http_options=clock.options(),
                  annotation_lines=["::error file=lepton.yml,line=1::low"])
    assert lines == []  # no GitHub workflow commands on GitLab, and nothing to mask in the log
    assert res.comment["url"] == f"https://gitlab.example.com/group/sub/proj/-/merge_requests/3#note_{res.comment['id']}"
    [st] = gl.statuses
    assert st["status"] == "failed" and st["name"] == "lepton-ci/gate (toy)" and st["sha"] == SHA
    assert st["description"] == "1 of 1 gate checks failed"
    env = dict(line.split("=", 1) for line in dotenv.read_text().splitlines())
    assert env["LEPTON_COMMENT_URL"] == res.comment["url"]
    gl.assert_clean()


def test_job_token_only_context_posts_nothing(gl: GitLabStandIn) -> None:
    from lepton_ci.forge.detect import detect

    ctx = detect({"GITLAB_CI": "true", "CI_API_V4_URL": gl.url, "CI_PROJECT_ID": "4242", "CI_MERGE_REQUEST_IID": "3",
                  "CI_JOB_TOKEN": "glcbt-64_jobtoken", "CI_COMMIT_SHA": SHA})
    res = publish("r\n", ctx, model="toy", gate=None, emit=lambda s: None)
    assert res.comment is None and gl.requests == []
    [notice] = res.notices
    assert "CI_JOB_TOKEN" in notice and "`api` scope" in notice and "LEPTON_CI_GITLAB_TOKEN" in notice


def test_cli_form_serves_and_writes_state(tmp_path: Path) -> None:
    import subprocess
    import sys

    state = tmp_path / "state.jsonl"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.gitlab_standin", "--port", "0", "--state", str(state),
                             "--seed", "3:5", "--fault", "notes/create=502x1"],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api/v4")
        a = GitLabAPI(url, "4242", TOKEN, backoff_s=0.01, log=lambda s: None)
        assert post_sticky(a, 3, "r\n", MARKER)["action"] == "created"
        notes = requests.get(f"{url}/projects/4242/merge_requests/3/notes?per_page=100", headers={"PRIVATE-TOKEN": TOKEN},
                             timeout=5).json()
        assert len(notes) == 6
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "violation" not in err, err
    rows = [json.loads(line) for line in state.read_text().splitlines()]
    assert [r["operation"] for r in rows] == ["notes/list", "notes/create", "notes/list", "notes/create", "notes/list"]
    assert rows[1]["status"] == 502 and rows[1]["fault"] == "502"


def _branch_pipeline(gl: GitLabStandIn, **extra: str) -> ForgeContext:
    from lepton_ci.forge.detect import detect

    # A branch pipeline: GitLab sets no CI_MERGE_REQUEST_IID, so the merge request is looked up by commit.
    return detect({"GITLAB_CI": "true", "CI_API_V4_URL": gl.url, "CI_PROJECT_ID": "4242", "CI_COMMIT_SHA": SHA,
                   "CI_COMMIT_BRANCH": "feature", "CI_PIPELINE_SOURCE": "push", "CI_JOB_NAME": "lepton-report",
                   "LEPTON_CI_GITLAB_TOKEN": TOKEN, **extra})


def test_branch_pipeline_finds_its_merge_request_from_the_commit(gl: GitLabStandIn, clock: Clock) -> None:
    other = "f" * 40
    gl.add_merge_request(4, SHA, "feature")
    gl.add_merge_request(3, SHA, "feature", state="merged")  # not open: never commented on
    gl.add_merge_request(9, SHA, "other-branch")  # same commit pushed as another branch's head
    gl.add_merge_request(3, other, "feature")  # another commit
    ctx = _branch_pipeline(gl)
    assert ctx.pr_number is None and ctx.branch == "feature"
    res = publish("r\n", ctx, model="toy", gate=None, emit=lambda s: None, http_options=clock.options())
    assert res.notices == [] and res.comment and res.comment["action"] == "created"
    assert ctx.pr_number == 4 and ctx.describe() == "gitlab 4242 #4 (found from the commit)"
    assert len(ours(gl, 4)) == 1 and ours(gl, 3) == []
    [lookup] = gl.calls("commits/merge_requests")
    assert lookup["path"].startswith(f"/api/v4/projects/4242/repository/commits/{SHA}/merge_requests")
    gl.assert_clean()


def test_branch_pipeline_without_one_open_merge_request_posts_nothing_and_says_why(gl: GitLabStandIn,
                                                                                   clock: Clock) -> None:
    res = publish("r\n", _branch_pipeline(gl), model="toy", gate=None, emit=lambda s: None,
                  http_options=clock.options())
    assert res.comment is None and res.notices == ["no pull/merge request in this gitlab run: comment not posted"]
    gl.add_merge_request(3, SHA, "feature")
    gl.add_merge_request(4, SHA, "feature", source_project_id=99)  # from a fork: lives elsewhere
    gl.add_merge_request(3, SHA, "feature")
    res = publish("r\n", _branch_pipeline(gl), model="toy", gate=None, emit=lambda s: None,
                  http_options=clock.options())
    assert res.comment is None and "several open pull/merge requests (#3, #3)" in res.notices[0]
    assert gl.calls("notes/create") == []
    # A token that cannot read the project: a notice naming the scope, not a failed report.
    gl.fail("commits/merge_requests", 403)
    res = publish("r\n", _branch_pipeline(gl), model="toy", gate=None, emit=lambda s: None,
                  http_options=clock.options())
    assert res.comment is None and res.notices[0].startswith("could not look up the pull/merge request of commit")
    assert "read_api" in res.notices[0]
    gl.assert_clean()
