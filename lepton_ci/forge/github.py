"""GitHub REST: issue comments on pull requests and commit statuses.

Errors carry one line that says what to do: a rejected token, a missing `permissions:` entry, a pull
request that does not exist (or that the token cannot see).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from lepton_ci.forge.http import AmbiguousWrite, ForgeError, HttpClient

BODY_LIMIT = 65_536
API_VERSION = "2022-11-28"
T = TypeVar("T")


class GitHubAPI:
    kind = "github"
    body_limit = BODY_LIMIT

    def __init__(
        self, api_url: str, repository: str, token: str, *, token_source: str | None = None, **http_options: Any
    ) -> None:
        self.repo = repository
        self.token_source = token_source or "the token"
        self._http = HttpClient(
            api_url,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": "lepton-ci",
            },
            **http_options,
        )

    @property
    def http(self) -> HttpClient:
        """The HTTP client (ForgeAPI): publish reads its retry count and backoff, and logs through it."""
        return self._http

    def _explain(self, what: str, permission: str, number: int | None, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except AmbiguousWrite:
            raise
        except ForgeError as exc:
            status = exc.status
            if status == 401:
                hint = f"GitHub rejected {self.token_source} (401 Bad credentials): it is wrong, expired or revoked"
            elif status == 403:
                hint = (
                    f"{self.token_source} lacks the permission in {self.repo}: the workflow needs `permissions: "
                    f"{permission}` (a pull request from a fork only gets a read-only token)"
                )
            elif status == 404 and number is not None:
                hint = (
                    f"pull request #{number} not found in {self.repo}, or {self.token_source} cannot see that "
                    "repository"
                )
            elif status == 404:
                hint = f"not found in {self.repo}, or {self.token_source} cannot see that repository"
            elif status == 410:
                hint = f"issues are disabled in {self.repo}, or #{number} was deleted"
            elif status == 422:
                hint = "GitHub refused the request"
            else:  # 5xx or transport errors after every retry, or a rate limit too long to wait for
                raise ForgeError(f"cannot {what}: {exc.message}", status=status) from None
            raise ForgeError(f"cannot {what}: {hint} ({exc.message})", status=status) from None

    def list_comments(self, number: int) -> Iterator[dict[str, Any]]:
        pages = self._http.paginate(f"/repos/{self.repo}/issues/{number}/comments", {"per_page": 100})
        while True:
            c = self._explain(
                "read the pull request's comments", "pull-requests: read", number, lambda: next(pages, None)
            )
            if c is None:
                return
            yield {"id": c["id"], "body": c.get("body") or "", "url": c.get("html_url")}

    def create_comment(self, number: int, body: str) -> dict[str, Any]:
        c = self._explain(
            "comment on the pull request",
            "pull-requests: write",
            number,
            lambda: (
                self._http.request(
                    "POST", f"/repos/{self.repo}/issues/{number}/comments", json_body={"body": body}, idempotent=False
                ).body
            ),
        )
        return {"id": c["id"], "url": c.get("html_url")}

    def update_comment(self, number: int, comment_id: int, body: str) -> dict[str, Any]:
        c = self._explain(
            "update the pull request comment",
            "pull-requests: write",
            None,
            lambda: (
                self._http.request(
                    "PATCH", f"/repos/{self.repo}/issues/comments/{comment_id}", json_body={"body": body}
                ).body
            ),
        )
        return {"id": c["id"], "url": c.get("html_url")}

    def set_status(self, sha: str, state: str, context: str, description: str, target_url: str | None) -> None:
        """state: success, failure, error or pending (GitHub's commit status states)."""
        body: dict[str, Any] = {"state": state, "context": context, "description": description[:140]}
        if target_url:
            body["target_url"] = target_url
        # a repeated status is harmless (GitHub keeps the latest per context), so retrying is safe
        self._explain(
            "set a commit status",
            "statuses: write",
            None,
            lambda: self._http.request("POST", f"/repos/{self.repo}/statuses/{sha}", json_body=body, idempotent=True),
        )

    def open_pull_requests_for(self, sha: str, branch: str | None) -> list[int]:
        pages = self._http.paginate(f"/repos/{self.repo}/commits/{sha}/pulls", {"per_page": 100})
        found: list[int] = []
        while True:
            pr = self._explain(
                f"find the pull request of commit {sha[:12]}", "pull-requests: read", None, lambda: next(pages, None)
            )
            if pr is None:
                return sorted(found)
            head, base = pr.get("head") or {}, pr.get("base") or {}
            if (
                pr.get("state") == "open"
                and head.get("sha") == sha
                and (branch is None or head.get("ref") == branch)
                and ((base.get("repo") or {}).get("full_name") or "").lower() == self.repo.lower()
                and isinstance(pr.get("number"), int)
            ):
                found.append(pr["number"])


if TYPE_CHECKING:  # mypy: GitHubAPI is a ForgeAPI, constructor included
    from lepton_ci.forge.base import ForgeAPIFactory

    _factory: ForgeAPIFactory = GitHubAPI
