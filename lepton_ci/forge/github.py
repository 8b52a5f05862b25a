"""GitHub REST: issue comments on pull requests and commit statuses."""

from __future__ import annotations

from typing import Any, Iterator

from lepton_ci.forge.http import HttpClient

BODY_LIMIT = 65_536
API_VERSION = "2022-11-28"


class GitHubAPI:
    kind = "github"
    body_limit = BODY_LIMIT

    def __init__(self, api_url: str, repository: str, token: str, **http_options: Any) -> None:
        self.repo = repository
        self.http = HttpClient(api_url, headers={
            "Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION, "User-Agent": "lepton-ci",
        }, **http_options)

    def list_comments(self, number: int) -> Iterator[dict[str, Any]]:
        for c in self.http.paginate(f"/repos/{self.repo}/issues/{number}/comments", {"per_page": 100}):
            yield {"id": c["id"], "body": c.get("body") or "", "url": c.get("html_url")}

    def create_comment(self, number: int, body: str) -> dict[str, Any]:
        c = self.http.request("POST", f"/repos/{self.repo}/issues/{number}/comments", json_body={"body": body}).body
        return {"id": c["id"], "url": c.get("html_url")}

    def update_comment(self, number: int, comment_id: int, body: str) -> dict[str, Any]:
        c = self.http.request("PATCH", f"/repos/{self.repo}/issues/comments/{comment_id}", json_body={"body": body}).body
        return {"id": c["id"], "url": c.get("html_url")}

    def set_status(self, sha: str, state: str, context: str, description: str, target_url: str | None) -> None:
        """state: success, failure, error or pending (GitHub's commit status states)."""
        body: dict[str, Any] = {"state": state, "context": context, "description": description[:140]}
        if target_url:
            body["target_url"] = target_url
        self.http.request("POST", f"/repos/{self.repo}/statuses/{sha}", json_body=body)
