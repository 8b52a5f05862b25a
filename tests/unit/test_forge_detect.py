"""Forge detection from the CI's environment: GitHub (and Enterprise Server), GitLab (and self-managed), local."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lepton_ci.forge.detect import detect


def _event(tmp_path: Path, head_repo: str | None, base_repo: str = "octo/repo", number: int = 12) -> str:
    path = tmp_path / f"event-{(head_repo or 'deleted').replace('/', '_')}-{number}.json"
    path.write_text(json.dumps({"pull_request": {
        "number": number, "head": {"sha": "h" * 40, "repo": {"full_name": head_repo} if head_repo else None},
        "base": {"sha": "b" * 40, "repo": {"full_name": base_repo}}}}))
    return str(path)


def gh_env(tmp_path: Path, **kw: str) -> dict[str, str]:
    env = {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "octo/repo", "GITHUB_EVENT_NAME": "pull_request",
           "GITHUB_SHA": "m" * 40, "GITHUB_RUN_ID": "5", "GITHUB_WORKFLOW": "ml", "GITHUB_TOKEN": "ghs_token123",
           "GITHUB_EVENT_PATH": _event(tmp_path, "octo/repo")}
    env.update(kw)
    return env


def test_github_pull_request(tmp_path: Path) -> None:
    ctx = detect(gh_env(tmp_path, GITHUB_STEP_SUMMARY=str(tmp_path / "s"), GITHUB_OUTPUT=str(tmp_path / "o")))
    assert (ctx.kind, ctx.api_url, ctx.repository, ctx.pr_number) == ("github", "https://api.github.com", "octo/repo", 12)
    assert ctx.head_sha == "h" * 40 and ctx.base_sha == "b" * 40  # the PR head, not the merge commit
    assert ctx.can_write and ctx.token_source == "GITHUB_TOKEN" and ctx.workflow == "ml"
    assert ctx.run_url == "https://github.com/octo/repo/actions/runs/5"
    assert ctx.summary_path == tmp_path / "s" and ctx.output_path == tmp_path / "o"
    assert "ghs_token123" not in repr(ctx)


def test_github_enterprise_server_urls_come_from_the_environment(tmp_path: Path) -> None:
    ctx = detect(gh_env(tmp_path, GITHUB_SERVER_URL="https://ghe.example.com",
                        GITHUB_API_URL="https://ghe.example.com/api/v3"))
    assert ctx.api_url == "https://ghe.example.com/api/v3"
    assert ctx.run_url == "https://ghe.example.com/octo/repo/actions/runs/5"
    # without GITHUB_API_URL the server's /api/v3 is used, never api.github.com
    env = gh_env(tmp_path, GITHUB_SERVER_URL="https://ghe.example.com/")
    assert detect(env).api_url == "https://ghe.example.com/api/v3"


def test_token_precedence(tmp_path: Path) -> None:
    ctx = detect(gh_env(tmp_path, LEPTON_CI_GITHUB_TOKEN="ghp_explicit1", GH_TOKEN="ghp_gh0000"))
    assert ctx.token == "ghp_explicit1" and ctx.token_source == "LEPTON_CI_GITHUB_TOKEN"


@pytest.mark.parametrize("head_repo", ["someone/repo", None])
@pytest.mark.parametrize("token_var", ["GITHUB_TOKEN", "LEPTON_CI_GITHUB_TOKEN"])
def test_fork_pull_request_is_read_only(tmp_path: Path, head_repo: str | None, token_var: str) -> None:
    env = gh_env(tmp_path, GITHUB_EVENT_PATH=_event(tmp_path, head_repo))
    env.pop("GITHUB_TOKEN")
    env[token_var] = "ghs_readonly"
    ctx = detect(env)
    assert not ctx.can_write and ctx.pr_number == 12
    assert "fork" in ctx.read_only_reason and "job summary" in ctx.read_only_reason


def test_pull_request_target_from_a_fork_can_write(tmp_path: Path) -> None:
    ctx = detect(gh_env(tmp_path, GITHUB_EVENT_NAME="pull_request_target", GITHUB_EVENT_PATH=_event(tmp_path, "x/y")))
    assert ctx.can_write


def test_no_token(tmp_path: Path) -> None:
    env = gh_env(tmp_path)
    env.pop("GITHUB_TOKEN")
    ctx = detect(env)
    assert not ctx.can_write and "no token" in ctx.read_only_reason and "pull-requests: write" in ctx.read_only_reason


def test_pr_number_from_ref_without_an_event_file(tmp_path: Path) -> None:
    env = gh_env(tmp_path, GITHUB_REF="refs/pull/31/merge")
    env.pop("GITHUB_EVENT_PATH")
    assert detect(env).pr_number == 31
    env["GITHUB_REF"] = "refs/heads/main"
    assert detect(env).pr_number is None


def test_issue_comment_event(tmp_path: Path) -> None:
    (tmp_path / "e.json").write_text(json.dumps({"issue": {"number": 4, "pull_request": {"url": "x"}}}))
    ctx = detect(gh_env(tmp_path, GITHUB_EVENT_NAME="issue_comment", GITHUB_EVENT_PATH=str(tmp_path / "e.json")))
    assert ctx.pr_number == 4 and ctx.can_write


def test_broken_event_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "e.json").write_text("{not json")
    ctx = detect(gh_env(tmp_path, GITHUB_EVENT_PATH=str(tmp_path / "e.json")))
    assert ctx.kind == "github" and ctx.pr_number is None


def gl_env(**kw: str) -> dict[str, str]:
    env = {"GITLAB_CI": "true", "CI_SERVER_URL": "https://gitlab.acme.internal", "CI_PROJECT_ID": "77",
           "CI_PROJECT_PATH": "ml/models", "CI_MERGE_REQUEST_IID": "9", "CI_COMMIT_SHA": "c" * 40,
           "CI_JOB_NAME": "report", "CI_PIPELINE_URL": "https://gitlab.acme.internal/ml/models/-/pipelines/1",
           "CI_PROJECT_URL": "https://gitlab.acme.internal/ml/models", "CI_JOB_TOKEN": "glcbt-job"}
    env.update(kw)
    return env


def test_gitlab_self_managed() -> None:
    ctx = detect(gl_env(LEPTON_CI_GITLAB_TOKEN="glpat-x123456", CI_API_V4_URL="https://gitlab.acme.internal/api/v4"))
    assert (ctx.kind, ctx.api_url, ctx.repository, ctx.pr_number) == ("gitlab", "https://gitlab.acme.internal/api/v4", "77", 9)
    assert ctx.can_write and ctx.token_source == "LEPTON_CI_GITLAB_TOKEN" and ctx.workflow == "report"
    # no CI_API_V4_URL (older runners): derived from the server, never gitlab.com
    assert detect(gl_env(GITLAB_TOKEN="glpat-x123456")).api_url == "https://gitlab.acme.internal/api/v4"


def test_gitlab_job_token_only_is_read_only_with_the_reason() -> None:
    ctx = detect(gl_env())
    assert not ctx.can_write and ctx.token is None
    for needle in ("CI_JOB_TOKEN", "`api` scope", "LEPTON_CI_GITLAB_TOKEN"):
        assert needle in ctx.read_only_reason


def test_gitlab_fork_merge_request_posts_to_the_target_project() -> None:
    ctx = detect(gl_env(LEPTON_CI_GITLAB_TOKEN="glpat-x123456", CI_MERGE_REQUEST_PROJECT_ID="12",
                        CI_MERGE_REQUEST_PROJECT_URL="https://gitlab.acme.internal/upstream/models"))
    assert ctx.repository == "12" and ctx.project_url == "https://gitlab.acme.internal/upstream/models"


def test_local() -> None:
    ctx = detect({"CI": "true", "GITHUB_ACTIONS": "false"})
    assert ctx.kind == "local" and not ctx.can_write and "not running in GitHub Actions or GitLab CI" in ctx.read_only_reason
