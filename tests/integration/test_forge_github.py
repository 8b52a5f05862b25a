"""lepton_ci.forge against the GitHub API stand-in: real HTTP, every request and response checked against
GitHub's OpenAPI description. Waits are injected (`sleep`) so retries and rate limits cost no time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from lepton_ci.forge.detect import ForgeContext
from lepton_ci.forge.github import GitHubAPI
from lepton_ci.forge.http import ForgeError, HttpClient
from lepton_ci.forge.publish import SUMMARY_LIMIT, post_sticky, publish, sticky_marker
from tests.support.github_standin import GitHubStandIn, require_spec

REPO = "octo/repo"
TOKEN = "ghp_libraryTestToken000000000000000001"
SHA = "0123456789abcdef0123456789abcdef01234567"
MARKER = sticky_marker("toy", "ci")


class Clock:
    """Injected into HttpClient: records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.logs: list[str] = []

    def options(self, **kw: Any) -> dict[str, Any]:
        return {"sleep": self.waits.append, "log": self.logs.append, "backoff_s": 0.01, "timeout_s": 5, **kw}


@pytest.fixture(scope="module")
def spec() -> Path:
    return require_spec()


@pytest.fixture()
def gh(spec: Path) -> Iterator[GitHubStandIn]:
    with GitHubStandIn(spec, repo=REPO, prs={7, 8}) as s:
        yield s


@pytest.fixture()
def clock() -> Clock:
    return Clock()


def api(gh: GitHubStandIn, clock: Clock, token: str = TOKEN, **kw: Any) -> GitHubAPI:
    return GitHubAPI(gh.url, REPO, token, **clock.options(**kw))


def lepton_comments(gh: GitHubStandIn, pr: int = 7, marker: str = MARKER) -> list[dict[str, Any]]:
    return [c for c in gh.comments(pr) if c["body"].startswith(marker)]


# ---- the stand-in itself ---------------------------------------------------------------------------------

def test_standin_rejects_and_records_contract_violations(gh: GitHubStandIn) -> None:
    h = {"Authorization": f"Bearer {TOKEN}"}
    base = f"{gh.url}/repos/{REPO}"
    assert requests.post(f"{base}/issues/7/comments", json={"bdy": "x"}, headers=h, timeout=5).status_code == 422
    assert requests.post(f"{base}/issues/7/comments", json={"body": 5}, headers=h, timeout=5).status_code == 422
    assert requests.get(f"{base}/issues/7/comments?per_page=101", headers=h, timeout=5).status_code == 422
    assert requests.get(f"{base}/issues/7/comments?per_page=ten", headers=h, timeout=5).status_code == 422
    assert requests.get(f"{base}/issues/7/comments?sort=asc", headers=h, timeout=5).status_code == 422
    assert requests.get(f"{base}/issues/seven/comments", headers=h, timeout=5).status_code == 404
    assert requests.get(f"{base}/issues/7/comments", timeout=5).status_code == 401
    assert requests.get(f"{base}/issues/7/comments", headers={"Authorization": "Basic abc"}, timeout=5).status_code == 401
    assert requests.get(f"{gh.url}/no/such/route", headers=h, timeout=5).status_code == 404
    assert requests.get(f"{base}/pulls/7/files", headers=h, timeout=5).status_code == 404  # real, but not ours
    assert requests.post(f"{base}/statuses/{SHA}", json={"state": "great"}, headers=h, timeout=5).status_code == 422
    assert len(gh.violations) == 11, gh.violations
    assert all(r["violations"] for r in gh.requests)
    # A valid check run is accepted, and its (large) response validates against the schema.
    r = requests.post(f"{base}/check-runs", headers=h, timeout=5,
                      json={"name": "lepton-ci/gate", "head_sha": SHA, "conclusion": "success",
                            "output": {"title": "gate passed", "summary": "3/3"}})
    assert r.status_code == 201 and r.json()["status"] == "completed"
    assert len(gh.violations) == 11, gh.violations[11:]


def test_standin_pagination_links_are_githubs(gh: GitHubStandIn) -> None:
    gh.seed(7, 250)
    h = {"Authorization": f"token {TOKEN}"}
    r = requests.get(f"{gh.url}/repos/{REPO}/issues/7/comments", params={"per_page": 100, "page": 2}, headers=h, timeout=5)
    assert r.status_code == 200 and len(r.json()) == 100
    links = requests.utils.parse_header_links(r.headers["Link"])
    rels = {x["rel"]: x["url"] for x in links}
    assert set(rels) == {"prev", "next", "last", "first"}
    assert rels["next"] == f"{gh.url}/repositories/{gh.repo_id}/issues/7/comments?per_page=100&page=3"
    last = requests.get(rels["last"], headers=h, timeout=5)
    assert len(last.json()) == 50 and "next" not in last.headers["Link"]
    gh.assert_clean()


def test_responses_are_schema_checked(spec: Path) -> None:
    """The stand-in catches its own bugs: a response that breaks the schema is a violation."""
    with GitHubStandIn(spec, repo=REPO) as s:
        s.add_comment(7, "x")["user"] = None  # allowed: nullable-simple-user
        with s.lock:
            next(iter(s.comments_by_id.values()))["comment"]["node_id"] = 5
        requests.get(f"{s.url}/repos/{REPO}/issues/7/comments", headers={"Authorization": "Bearer abcdefgh"}, timeout=5)
        assert any("node_id" in v for v in s.violations), s.violations


# ---- sticky comment --------------------------------------------------------------------------------------

def test_sticky_comment_is_created_once_and_updated_in_place(gh: GitHubStandIn, clock: Clock) -> None:
    a = api(gh, clock)
    first = post_sticky(a, 7, "report v1\n", MARKER)
    assert first["action"] == "created" and first["url"].endswith(f"/pull/7#issuecomment-{first['id']}")
    for i in range(2, 6):
        r = post_sticky(a, 7, f"report v{i}\n", MARKER)
        assert r["action"] == "updated" and r["id"] == first["id"]
    again = post_sticky(a, 7, "report v5\n", MARKER)
    assert again["action"] == "unchanged"
    [c] = lepton_comments(gh)
    assert c["id"] == first["id"] and c["body"] == f"{MARKER}\nreport v5\n"
    assert len(gh.calls("issues/create-comment")) == 1
    assert len(gh.calls("issues/update-comment")) == 4
    gh.assert_clean()


def test_sticky_comment_found_on_page_three_of_many(gh: GitHubStandIn, clock: Clock) -> None:
    gh.seed(7, 230)
    a = api(gh, clock)
    created = post_sticky(a, 7, "report\n", MARKER)
    gh.seed(7, 40)  # more discussion after it: now it sits on page 3 of 100-comment pages
    index = [c["id"] for c in gh.comments(7)].index(created["id"])
    assert index // 100 == 2 and len(gh.comments(7)) == 271
    r = post_sticky(a, 7, "report, rerun\n", MARKER)
    assert r == {"action": "updated", "id": created["id"], "url": created["url"]}
    assert len(lepton_comments(gh)) == 1
    pages = [c["query"].get("page", "1") for c in gh.calls("issues/list-comments")][-3:]
    assert pages == ["1", "2", "3"]
    assert all(c["query"].get("per_page") == "100" for c in gh.calls("issues/list-comments"))
    gh.assert_clean()


def test_a_quoted_marker_in_someone_elses_comment_is_not_ours(gh: GitHubStandIn, clock: Clock) -> None:
    gh.add_comment(7, f"> earlier bot said:\n> {MARKER}\nplease fix", gh.HUMAN)
    r = post_sticky(api(gh, clock), 7, "report\n", MARKER)
    assert r["action"] == "created" and len(gh.comments(7)) == 2


def test_two_models_and_two_workflows_get_separate_comments(gh: GitHubStandIn, clock: Clock) -> None:
    a = api(gh, clock)
    keys = [("toy", "ci"), ("toy", "nightly"), ("other", "ci")]
    for _ in range(2):
        for model, wf in keys:
            post_sticky(a, 7, f"{model} {wf}\n", sticky_marker(model, wf))
    assert len(gh.comments(7)) == 3
    for model, wf in keys:
        [c] = lepton_comments(gh, marker=sticky_marker(model, wf))
        assert c["body"].endswith(f"{model} {wf}\n")
    gh.assert_clean()


def test_pr_not_found_is_one_clear_error(gh: GitHubStandIn, clock: Clock) -> None:
    with pytest.raises(ForgeError) as e:
        post_sticky(api(gh, clock), 99, "x", MARKER)
    assert e.value.status == 404
    assert "pull request #99 not found in octo/repo" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(("status", "needle"), [
    (401, "rejected the token (401 Bad credentials)"),
    (403, "permissions: pull-requests: write"),
    (422, "cannot comment on the pull request: GitHub refused the request"),
])
def test_client_errors_are_not_retried_and_explained(gh: GitHubStandIn, clock: Clock, status: int, needle: str) -> None:
    gh.fail("issues/create-comment", status)
    with pytest.raises(ForgeError) as e:
        post_sticky(api(gh, clock), 7, "x", MARKER)
    assert needle in str(e.value) and e.value.status == status
    assert len(gh.calls("issues/create-comment")) == 1 and clock.waits == []
    assert gh.comments(7) == []


def test_5xx_storm_then_success_posts_exactly_once(gh: GitHubStandIn, clock: Clock) -> None:
    gh.fail("issues/list-comments", 503, times=2)
    gh.fail("issues/create-comment", 502, times=3)
    r = post_sticky(api(gh, clock), 7, "report\n", MARKER)
    assert r["action"] == "created"
    assert len(lepton_comments(gh)) == 1
    assert len(gh.calls("issues/create-comment")) == 4
    assert len(clock.waits) == 5 and all(w < 1 for w in clock.waits)
    assert any("HTTP 502" in line and "looking for the comment" in line for line in clock.logs), clock.logs
    gh.assert_clean()


def test_5xx_forever_gives_a_clear_error_after_retries(gh: GitHubStandIn, clock: Clock) -> None:
    gh.fail("issues/create-comment", 500, times=100)
    with pytest.raises(ForgeError) as e:
        post_sticky(api(gh, clock, max_retries=3), 7, "report\n", MARKER)
    assert "gave up after 4 attempts" in str(e.value) and "HTTP 500" in str(e.value)
    assert len(gh.calls("issues/create-comment")) == 4
    gh.fail("issues/list-comments", 503, times=100)
    with pytest.raises(ForgeError, match=r"failed after 4 attempts \(HTTP 503\)"):
        post_sticky(api(gh, clock, max_retries=3), 7, "report\n", MARKER)


def test_429_with_retry_after_is_honoured(gh: GitHubStandIn, clock: Clock) -> None:
    gh.fail("issues/list-comments", 429, retry_after=7)
    gh.fail("issues/create-comment", 429, retry_after=3)
    post_sticky(api(gh, clock), 7, "report\n", MARKER)
    assert clock.waits == [7.0, 3.0]
    assert len(lepton_comments(gh)) == 1 and len(gh.calls("issues/create-comment")) == 2


def test_secondary_rate_limit_and_exhausted_quota(gh: GitHubStandIn, clock: Clock) -> None:
    gh.fail("issues/list-comments", secondary=True, retry_after=5)
    gh.fail("issues/list-comments", secondary=True)  # no Retry-After: wait at least a minute
    gh.fail("issues/create-comment", ratelimit_reset=30)  # x-ratelimit-remaining: 0 until reset
    post_sticky(api(gh, clock), 7, "report\n", MARKER)
    assert clock.waits[:2] == [5.0, 60.0]
    assert 29 <= clock.waits[2] <= 32
    assert len(lepton_comments(gh)) == 1
    gh.fail("issues/list-comments", ratelimit_reset=3600)
    with pytest.raises(ForgeError, match=r"asks to wait 3\d{3}s"):
        post_sticky(api(gh, clock), 7, "report\n", MARKER)
    gh.fail("issues/list-comments", secondary=True, retry_after=1, times=10)
    with pytest.raises(ForgeError) as e:
        post_sticky(api(gh, clock, max_retries=1), 7, "report\n", MARKER)
    assert "failed after 2 attempts (HTTP 403 (You have exceeded a secondary rate limit" in str(e.value)
    assert "permission" not in str(e.value) and e.value.status == 429


def test_connection_reset_then_success_posts_exactly_once(gh: GitHubStandIn, clock: Clock) -> None:
    gh.fail("issues/list-comments", reset=True)
    gh.fail("issues/create-comment", reset=True)  # reset before the comment is created
    r = post_sticky(api(gh, clock), 7, "report\n", MARKER)
    assert r["action"] == "created"
    assert len(lepton_comments(gh)) == 1 and len(gh.calls("issues/create-comment")) == 2
    gh.assert_clean()


@pytest.mark.parametrize("fault", [{"reset_after": True}, {"delay": 1.5}, {"status": 502, "after": True}],
                         ids=["reset-after-create", "timeout-after-create", "502-after-create"])
def test_a_create_that_succeeded_without_an_answer_is_not_repeated(gh: GitHubStandIn, clock: Clock,
                                                                    fault: dict[str, Any]) -> None:
    """The server created the comment but the client saw a reset, a timeout, or a 502 from a proxy."""
    gh.fail("issues/create-comment", **fault)
    r = post_sticky(api(gh, clock, timeout_s=0.5), 7, "report\n", MARKER)
    assert r["action"] == "created"
    [c] = lepton_comments(gh)
    assert r["id"] == c["id"]
    assert len(gh.calls("issues/create-comment")) == 1  # looked, found it, did not post again
    assert any("may or may not have acted" in line for line in clock.logs)


def test_huge_report_is_truncated_with_a_note_and_posted(gh: GitHubStandIn, clock: Clock) -> None:
    report = "".join(f"| `metric.{i}` | {i} | {i + 1} | ▲ 🟢 |\n" for i in range(5000))
    report += "```mermaid\n" + "x-axis [a]\n" * 2000 + "```\n"
    assert len(report) > 200_000
    a = api(gh, clock)
    r = post_sticky(a, 7, report, MARKER)
    [c] = lepton_comments(gh)
    assert r["action"] == "created" and len(c["body"]) <= 65_536
    assert "Report truncated to fit the 65,536-character comment limit" in c["body"]
    assert post_sticky(a, 7, report, MARKER)["action"] == "unchanged"
    gh.assert_clean()  # the stand-in enforces GitHub's 65,536-character limit


def test_link_to_another_host_is_not_followed_with_the_token(spec: Path, clock: Clock) -> None:
    with GitHubStandIn(spec, repo=REPO) as s:
        s.seed(7, 150)
        client = HttpClient(s.url.replace("127.0.0.1", "localhost"), headers={"Authorization": f"Bearer {TOKEN}"},
                            **clock.options())
        with pytest.raises(ForgeError, match="next page is on another host"):
            list(client.paginate(f"/repos/{REPO}/issues/7/comments", {"per_page": 100}))
        assert len(s.requests) == 1


def test_enterprise_server_prefix(spec: Path, clock: Clock) -> None:
    """GitHub Enterprise Server: /api/v3, held to the newest GHES description @octokit/openapi ships."""
    ghes = sorted(spec.parent.glob("ghes-3.*[0-9].json"), key=lambda p: int(p.stem.rsplit(".", 1)[1]))
    with GitHubStandIn(ghes[-1] if ghes else spec, repo=REPO, prefix="/api/v3") as s:
        s.seed(7, 120)
        a = GitHubAPI(s.url, REPO, TOKEN, **clock.options())
        assert s.url.endswith("/api/v3")
        post_sticky(a, 7, "report\n", MARKER)
        post_sticky(a, 7, "report 2\n", MARKER)
        assert len([c for c in s.comments(7) if c["body"].startswith(MARKER)]) == 1
        assert all(r["route"].startswith("/api/v3/") for r in s.requests)
        s.assert_clean()


# ---- publish: summary, outputs, status, notices -----------------------------------------------------------

def _ctx(gh: GitHubStandIn, tmp_path: Path, **kw: Any) -> ForgeContext:
    base = dict(kind="github", api_url=gh.url, server_url=gh.origin, repository=REPO, pr_number=7, head_sha=SHA,
                token=TOKEN, token_source="GITHUB_TOKEN", can_write=True, workflow="ci",
                run_url=f"{gh.origin}/{REPO}/actions/runs/1", summary_path=tmp_path / "summary.md",
                output_path=tmp_path / "output", event="pull_request")
    base.update(kw)
    return ForgeContext(**base)


def _gate(passed: bool) -> Any:
    from lepton_ci.records import GateRecord

    results = [{"metric": "eval.accuracy", "rule": "min", "threshold": 0.95, "observed": 0.9, "baseline": None,
                "delta": None, "passed": passed, "reason": "0.9 < min 0.95" if not passed else "ok"}]
    return GateRecord(model="toy", results=results, verdict="pass" if passed else "fail")


def test_publish_writes_summary_outputs_and_status(gh: GitHubStandIn, clock: Clock, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "output"))
    lines: list[str] = []
    for passed in (True, False):
        res = publish(f"## report: gate {passed}\n", _ctx(gh, tmp_path), model="toy", gate=_gate(passed), emit=lines.append,
                      http_options=clock.options())
        assert res.comment and res.summary_written and res.status_set and not res.notices
    assert [s["state"] for s in gh.statuses] == ["success", "failure"]
    assert gh.statuses[0]["context"] == "lepton-ci/gate (toy)" and gh.statuses[0]["sha"] == SHA
    assert gh.statuses[0]["target_url"].endswith("/actions/runs/1")
    assert lines[0] == f"::add-mask::{TOKEN}"
    outputs = (tmp_path / "output").read_text()
    [c] = lepton_comments(gh)
    assert f"comment-url={c['html_url']}\n" in outputs and f"comment-id={c['id']}\n" in outputs
    assert "comment-action=updated\n" in outputs.split("comment-action=created\n", 1)[1]
    assert (tmp_path / "summary.md").read_text().count("## report: gate") == 2
    gh.assert_clean()


def test_status_permission_missing_is_a_notice(gh: GitHubStandIn, clock: Clock, tmp_path: Path) -> None:
    gh.fail("repos/create-commit-status", 403, message="Resource not accessible by integration")
    lines: list[str] = []
    res = publish("r\n", _ctx(gh, tmp_path), model="toy", gate=_gate(True), emit=lines.append,
                  http_options=clock.options())
    assert res.comment and not res.status_set
    assert any(line.startswith("::notice title=lepton-ci::commit status not set") and "statuses: write" in line
               for line in lines), lines


def test_huge_summary_stays_under_one_mib(gh: GitHubStandIn, clock: Clock, tmp_path: Path) -> None:
    report = "".join(f"| `m{i}` | {i} | ▲ 🟢 |\n" for i in range(80_000))
    assert len(report.encode()) > 2 * SUMMARY_LIMIT
    (tmp_path / "summary.md").write_text("earlier step output\n")
    publish(report, _ctx(gh, tmp_path), model="toy", gate=None, emit=lambda s: None, http_options=clock.options())
    text = (tmp_path / "summary.md").read_text()
    assert SUMMARY_LIMIT - 4096 < len(text.encode()) <= SUMMARY_LIMIT
    assert text.startswith("earlier step output\n| `m0` |") and "Report truncated to fit the job summary's 1 MiB limit" in text
    [c] = lepton_comments(gh)
    assert len(c["body"]) <= 65_536


def test_read_only_context_writes_summary_and_a_notice_only(gh: GitHubStandIn, tmp_path: Path) -> None:
    ctx = _ctx(gh, tmp_path, can_write=False, read_only_reason="pull request from the fork someone/repo: read-only")
    lines: list[str] = []
    res = publish("r\n", ctx, model="toy", gate=_gate(False), emit=lines.append,
                  annotation_lines=["::error file=lepton.yml,line=3::x"])
    assert res.comment is None and res.summary_written and not res.status_set
    assert gh.requests == []
    assert "::error file=lepton.yml,line=3::x" in lines
    assert any(line.startswith("::notice title=lepton-ci::comment not posted: pull request from the fork") for line in lines)
    assert "comment not posted" in (tmp_path / "summary.md").read_text()


def test_state_file_has_every_request_as_json_lines(spec: Path, tmp_path: Path, clock: Clock) -> None:
    state = tmp_path / "state.jsonl"
    with GitHubStandIn(spec, repo=REPO, state=state) as s:
        post_sticky(GitHubAPI(s.url, REPO, TOKEN, **clock.options()), 7, "r\n", MARKER)
    rows = [json.loads(line) for line in state.read_text().splitlines()]
    assert [(r["method"], r["operation"], r["status"]) for r in rows] == [
        ("GET", "issues/list-comments", 200), ("POST", "issues/create-comment", 201)]
    assert rows[1]["body"]["body"].startswith(MARKER) and rows[1]["auth"] == "Bearer"
    assert TOKEN not in state.read_text()


def test_cli_form_for_act_workflows(tmp_path: Path, spec: Path) -> None:
    """`python -m tests.support.github_standin`: prints its URL, serves until SIGTERM, writes the state file;
    /_standin/ control requests script faults and read comments while it runs."""
    import subprocess
    import sys

    state = tmp_path / "state.jsonl"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.github_standin", "--port", "0", "--state", str(state),
                             "--spec", str(spec), "--repo", REPO, "--token", TOKEN, "--prs", "7", "--seed", "7:120",
                             "--fault", "issues/create-comment=502x1"],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.poll() is not None else url
        requests.post(f"{url}/_standin/faults", json={"op": "issues/list-comments", "status": 429, "retry_after": 2},
                      timeout=5).raise_for_status()
        clock = Clock()
        r = post_sticky(GitHubAPI(url, REPO, TOKEN, **clock.options()), 7, "r\n", MARKER)
        assert r["action"] == "created" and 2.0 in clock.waits
        comments = requests.get(f"{url}/_standin/comments", params={"issue": 7}, timeout=5).json()
        assert len(comments) == 121 and comments[-1]["id"] == r["id"]
        assert requests.get(f"{url}/_standin/violations", timeout=5).json() == []
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "violation" not in err, err
    rows = [json.loads(line) for line in state.read_text().splitlines()]
    assert [(r["operation"], r["status"]) for r in rows if r["method"] == "POST"] == [
        ("issues/create-comment", 502), ("issues/create-comment", 201)]
    assert rows[0]["status"] == 429 and rows[0]["fault"] == "429"
    assert TOKEN not in state.read_text()


def test_comment_deleted_between_list_and_update_is_posted_anew(gh: GitHubStandIn, clock: Clock) -> None:
    a = api(gh, clock)
    post_sticky(a, 7, "v1\n", MARKER)
    gh.fail("issues/update-comment", 404)  # as if someone deleted it after we listed
    r = post_sticky(a, 7, "v2\n", MARKER)
    assert r["action"] == "created" and len(gh.calls("issues/create-comment")) == 2
    gh.assert_clean()


def _push_event(gh: GitHubStandIn, tmp_path: Path, **extra: str) -> ForgeContext:
    from lepton_ci.forge.detect import detect

    event = tmp_path / "push.json"
    event.write_text(json.dumps({"ref": "refs/heads/feature", "after": SHA, "repository": {"full_name": REPO}}))
    return detect({"GITHUB_ACTIONS": "true", "GITHUB_API_URL": gh.url, "GITHUB_REPOSITORY": REPO, "GITHUB_SHA": SHA,
                   "GITHUB_REF": "refs/heads/feature", "GITHUB_EVENT_NAME": "push", "GITHUB_EVENT_PATH": str(event),
                   "GITHUB_WORKFLOW": "ci", "GITHUB_TOKEN": TOKEN, **extra})


def test_push_event_finds_its_pull_request_from_the_commit(gh: GitHubStandIn, clock: Clock, tmp_path: Path) -> None:
    gh.add_pull(8, SHA, "feature")
    gh.add_pull(7, SHA, "feature", state="closed")
    gh.add_pull(7, SHA, "elsewhere")
    gh.add_pull(7, "e" * 40, "feature")
    ctx = _push_event(gh, tmp_path)
    assert ctx.pr_number is None and ctx.branch == "feature"
    res = publish("r\n", ctx, model="toy", gate=None, emit=lambda s: None, http_options=clock.options())
    assert res.notices == [] and res.comment and res.comment["action"] == "created"
    assert ctx.pr_number == 8 and ctx.pr_found_by == "commit"
    assert len(lepton_comments(gh, 8)) == 1 and lepton_comments(gh, 7) == []
    assert [r["operation"] for r in gh.requests][0] == "repos/list-pull-requests-associated-with-commit"
    gh.assert_clean()


def test_push_event_with_several_or_no_pull_requests_posts_nothing(gh: GitHubStandIn, clock: Clock,
                                                                  tmp_path: Path) -> None:
    res = publish("r\n", _push_event(gh, tmp_path), model="toy", gate=None, emit=lambda s: None,
                  http_options=clock.options())
    assert res.comment is None and res.notices == ["no pull/merge request in this github run: comment not posted"]
    gh.add_pull(7, SHA, "feature")
    gh.add_pull(8, SHA, "feature", head_repo="someone/fork")  # head in a fork, base here: still this repo's PR
    res = publish("r\n", _push_event(gh, tmp_path), model="toy", gate=None, emit=lambda s: None,
                  http_options=clock.options())
    assert res.comment is None and "several open pull/merge requests (#7, #8)" in res.notices[0]
    assert gh.comments(7) == [] and gh.comments(8) == []
    gh.assert_clean()
