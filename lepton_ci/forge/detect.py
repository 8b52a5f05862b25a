"""Which CI is this, which repository and pull/merge request, which API, which token, can it write.

Everything comes from the environment the CI sets; API URLs are never hard-coded so GitHub Enterprise
Server and self-managed GitLab work unchanged.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

GITHUB_TOKEN_VARS = ("LEPTON_CI_GITHUB_TOKEN", "GITHUB_TOKEN", "GH_TOKEN")
GITLAB_TOKEN_VARS = ("LEPTON_CI_GITLAB_TOKEN", "GITLAB_TOKEN")


@dataclass
class ForgeContext:
    kind: str  # "github", "gitlab" or "local"
    api_url: str | None = None
    api_url_source: str | None = None  # the variable api_url came from, for error messages
    server_url: str | None = None
    repository: str | None = None  # owner/name on GitHub, numeric id or path on GitLab
    pr_number: int | None = None
    head_sha: str | None = None
    base_sha: str | None = None
    token: str | None = field(default=None, repr=False)
    token_source: str | None = None
    can_write: bool = False
    read_only_reason: str | None = None
    workflow: str | None = None
    run_url: str | None = None
    summary_path: Path | None = None
    output_path: Path | None = None
    event: str | None = None
    project_url: str | None = None
    branch: str | None = None  # the pushed branch in a branch pipeline / push event (for the PR lookup)
    pr_found_by: str | None = None  # "event" (the CI named it) or "commit" (looked up from head_sha)

    def describe(self) -> str:
        target = f"#{self.pr_number}" if self.pr_number else "no pull/merge request"
        if self.pr_number and self.pr_found_by == "commit":
            target += " (found from the commit)"
        return f"{self.kind} {self.repository or '?'} {target}"


def _first(env: Mapping[str, str], names: tuple[str, ...]) -> tuple[str | None, str | None]:
    for name in names:
        if env.get(name):
            return env[name], name
    return None, None


def _github(env: Mapping[str, str]) -> ForgeContext:
    token, source = _first(env, GITHUB_TOKEN_VARS)
    server = env.get("GITHUB_SERVER_URL", "https://github.com")
    ctx = ForgeContext(
        kind="github",
        api_url=env.get("GITHUB_API_URL") or _default_github_api(server),
        server_url=server,
        api_url_source="GITHUB_API_URL" if env.get("GITHUB_API_URL") else "GITHUB_SERVER_URL",
        repository=env.get("GITHUB_REPOSITORY"),
        head_sha=env.get("GITHUB_SHA"),
        token=token,
        token_source=source,
        workflow=env.get("GITHUB_WORKFLOW"),
        event=env.get("GITHUB_EVENT_NAME"),
        summary_path=Path(env["GITHUB_STEP_SUMMARY"]) if env.get("GITHUB_STEP_SUMMARY") else None,
        output_path=Path(env["GITHUB_OUTPUT"]) if env.get("GITHUB_OUTPUT") else None,
    )
    if ctx.repository:
        ctx.project_url = f"{server}/{ctx.repository}"
    if env.get("GITHUB_RUN_ID") and ctx.repository:
        ctx.run_url = f"{server}/{ctx.repository}/actions/runs/{env['GITHUB_RUN_ID']}"
    event = {}
    if env.get("GITHUB_EVENT_PATH") and Path(env["GITHUB_EVENT_PATH"]).is_file():
        try:
            event = json.loads(Path(env["GITHUB_EVENT_PATH"]).read_text())
        except (json.JSONDecodeError, OSError):
            event = {}
    pr = event.get("pull_request") or {}
    if pr:
        ctx.pr_number = pr.get("number")
        ctx.head_sha = (pr.get("head") or {}).get("sha") or ctx.head_sha
        ctx.base_sha = (pr.get("base") or {}).get("sha")
    elif (event.get("issue") or {}).get("pull_request"):
        ctx.pr_number = event["issue"].get("number")
    if ctx.pr_number is None:  # no event file (or not a PR event): refs/pull/N/merge still names the PR
        m = re.fullmatch(r"refs/pull/(\d+)/(merge|head)", env.get("GITHUB_REF", ""))
        if m:
            ctx.pr_number = int(m.group(1))
    if isinstance(ctx.pr_number, str) and ctx.pr_number.isdigit():
        ctx.pr_number = int(ctx.pr_number)
    if ctx.pr_number is not None:
        ctx.pr_found_by = "event"
    if env.get("GITHUB_REF", "").startswith("refs/heads/"):
        ctx.branch = env["GITHUB_REF"][len("refs/heads/") :]
    head = pr.get("head") or {}
    head_repo = (head.get("repo") or {}).get("full_name")
    base_repo = ((pr.get("base") or {}).get("repo") or {}).get("full_name")
    # A `pull_request` run for a fork gets a read-only GITHUB_TOKEN and no secrets, so whatever variable
    # holds the token, it can only be that read-only one. (A deleted fork has head.repo null.)
    from_fork = bool(pr) and base_repo is not None and (head_repo or "") != base_repo
    if not token:
        ctx.read_only_reason = (
            f"no token: set one of {', '.join(GITHUB_TOKEN_VARS)} "
            "(e.g. env: GITHUB_TOKEN: ${{ github.token }}) and grant `permissions: pull-requests: write`"
        )
    elif ctx.event == "pull_request" and from_fork:
        ctx.read_only_reason = (
            f"pull request from the fork {head_repo or '(deleted)'}: GitHub gives such runs a read-only "
            "token, so the report goes to the job summary only"
        )
    else:
        ctx.can_write = True
    return ctx


def _default_github_api(server: str) -> str:
    return "https://api.github.com" if server.rstrip("/") == "https://github.com" else server.rstrip("/") + "/api/v3"


def _gitlab(env: Mapping[str, str]) -> ForgeContext:
    token, source = _first(env, GITLAB_TOKEN_VARS)
    server = env.get("CI_SERVER_URL", "https://gitlab.com")
    iid = env.get("CI_MERGE_REQUEST_IID")
    ctx = ForgeContext(
        kind="gitlab",
        api_url=env.get("CI_API_V4_URL") or server.rstrip("/") + "/api/v4",
        server_url=server,
        api_url_source="CI_API_V4_URL" if env.get("CI_API_V4_URL") else "CI_SERVER_URL",
        # a merge request from a fork lives in the target project: CI_MERGE_REQUEST_PROJECT_ID names it
        repository=env.get("CI_MERGE_REQUEST_PROJECT_ID") or env.get("CI_PROJECT_ID") or env.get("CI_PROJECT_PATH"),
        pr_number=int(iid) if iid and iid.isdigit() else None,
        head_sha=env.get("CI_COMMIT_SHA"),
        base_sha=env.get("CI_MERGE_REQUEST_DIFF_BASE_SHA"),
        token=token,
        token_source=source,
        workflow=env.get("CI_JOB_NAME"),
        run_url=env.get("CI_PIPELINE_URL"),
        event=env.get("CI_PIPELINE_SOURCE"),
        project_url=env.get("CI_MERGE_REQUEST_PROJECT_URL") or env.get("CI_PROJECT_URL"),
        branch=env.get("CI_COMMIT_BRANCH") or None,
        pr_found_by="event" if iid and iid.isdigit() else None,
    )
    if token:
        ctx.can_write = True
    elif env.get("CI_JOB_TOKEN"):
        ctx.read_only_reason = (
            "only CI_JOB_TOKEN is available, and GitLab does not let job tokens post merge request "
            "notes: create a project or group access token with the `api` scope and store it as "
            "the masked CI/CD variable LEPTON_CI_GITLAB_TOKEN"
        )
    else:
        ctx.read_only_reason = (
            "no token: set LEPTON_CI_GITLAB_TOKEN to a project access token with the `api` scope "
            "(CI_JOB_TOKEN cannot post merge request notes)"
        )
    return ctx


def detect(env: Mapping[str, str] | None = None) -> ForgeContext:
    env = os.environ if env is None else env
    if env.get("GITHUB_ACTIONS") == "true":
        return _github(env)
    if env.get("GITLAB_CI") == "true":
        return _gitlab(env)
    return ForgeContext(kind="local", read_only_reason="not running in GitHub Actions or GitLab CI")
