"""GitLab REST v4: merge request notes and commit statuses.

Posting notes needs a token with the `api` scope in the PRIVATE-TOKEN header; CI_JOB_TOKEN can read
notes but not write them, which is why detection never falls back to it for posting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from lepton_ci.forge.http import AmbiguousWrite, ForgeError, HttpClient

BODY_LIMIT = 1_000_000
STATES = {"success": "success", "failure": "failed", "error": "failed", "pending": "pending"}
SCOPE_HINT = (
    "posting merge request notes needs a project, group or personal access token with the `api` scope "
    "(CI_JOB_TOKEN cannot post notes): store it as the masked CI/CD variable LEPTON_CI_GITLAB_TOKEN"
)
T = TypeVar("T")


class GitLabAPI:
    kind = "gitlab"
    body_limit = BODY_LIMIT

    def __init__(
        self, api_url: str, repository: str, token: str, *, token_source: str | None = None, **http_options: Any
    ) -> None:
        """`repository` is the project's numeric id or its path (group/name), as ForgeAPIFactory names it."""
        self.project_name = str(repository)
        self.project = quote(str(repository), safe="")
        self.token_source = token_source or "the token"
        self._http = HttpClient(api_url, headers={"PRIVATE-TOKEN": token, "User-Agent": "lepton-ci"}, **http_options)

    @property
    def http(self) -> HttpClient:
        """The HTTP client (ForgeAPI): publish reads its retry count and backoff, and logs through it."""
        return self._http

    def _notes(self, iid: int) -> str:
        return f"/projects/{self.project}/merge_requests/{iid}/notes"

    def _explain(self, what: str, iid: int | None, fn: Callable[[], T], scope_hint: str = SCOPE_HINT) -> T:
        try:
            return fn()
        except AmbiguousWrite:
            raise
        except ForgeError as exc:
            if exc.status == 401:
                hint = f"GitLab rejected {self.token_source} (401): it is wrong, expired or revoked; {scope_hint}"
            elif exc.status == 403:
                hint = f"{self.token_source} lacks the permission; {scope_hint}"
            elif exc.status == 404 and iid is not None:
                hint = (
                    f"merge request !{iid} not found in project {self.project_name}, or {self.token_source} "
                    "cannot see that project"
                )
            elif exc.status == 404:
                hint = f"not found in project {self.project_name}, or {self.token_source} cannot see that project"
            elif exc.status in (400, 422):
                hint = "GitLab refused the request"
            else:  # 5xx or transport errors after every retry, or a rate limit too long to wait for
                raise ForgeError(f"cannot {what}: {exc.message}", status=exc.status) from None
            raise ForgeError(f"cannot {what}: {hint} ({exc.message})", status=exc.status) from None

    def list_comments(self, number: int) -> Iterator[dict[str, Any]]:
        pages = self._http.paginate(self._notes(number), {"per_page": 100, "sort": "asc", "order_by": "created_at"})
        while True:
            n = self._explain("read the merge request's notes", number, lambda: next(pages, None))
            if n is None:
                return
            if not n.get("system"):
                yield {"id": n["id"], "body": n.get("body") or "", "url": None}

    def create_comment(self, number: int, body: str) -> dict[str, Any]:
        n = self._explain(
            "post a merge request note",
            number,
            lambda: self._http.request("POST", self._notes(number), json_body={"body": body}, idempotent=False).body,
        )
        return {"id": n["id"], "url": None}

    def update_comment(self, number: int, comment_id: int, body: str) -> dict[str, Any]:
        n = self._explain(
            "update the merge request note",
            number,
            lambda: self._http.request("PUT", f"{self._notes(number)}/{comment_id}", json_body={"body": body}).body,
        )
        return {"id": n["id"], "url": None}

    def set_status(self, sha: str, state: str, context: str, description: str, target_url: str | None) -> None:
        body: dict[str, Any] = {"state": STATES[state], "name": context, "description": description[:255]}
        if target_url:
            body["target_url"] = target_url
        self._explain(
            "set a commit status",
            None,
            lambda: self._http.request(
                "POST", f"/projects/{self.project}/statuses/{sha}", json_body=body, idempotent=True
            ),
            "setting a commit status needs a token with the `api` scope and at least the Developer role "
            "(CI_JOB_TOKEN cannot): store it as the masked CI/CD variable LEPTON_CI_GITLAB_TOKEN",
        )

    def open_pull_requests_for(self, sha: str, branch: str | None) -> list[int]:
        pages = self._http.paginate(
            f"/projects/{self.project}/repository/commits/{sha}/merge_requests", {"per_page": 100}
        )
        found: list[int] = []
        while True:
            mr = self._explain(
                f"find the merge request of commit {sha[:12]}",
                None,
                lambda: next(pages, None),
                "looking up merge requests needs a token that can read the project (read_api or api scope)",
            )
            if mr is None:
                return sorted(found)
            if (
                mr.get("state") == "opened"
                and mr.get("sha") == sha
                and (branch is None or mr.get("source_branch") == branch)
                and mr.get("source_project_id") == mr.get("target_project_id")
                and isinstance(mr.get("iid"), int)
            ):
                found.append(mr["iid"])


if TYPE_CHECKING:  # mypy: GitLabAPI is a ForgeAPI, constructor included
    from lepton_ci.forge.base import ForgeAPIFactory

    _factory: ForgeAPIFactory = GitLabAPI
