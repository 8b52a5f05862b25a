"""GitLab REST v4: merge request notes and commit statuses.

Posting notes needs a token with the `api` scope in the PRIVATE-TOKEN header; CI_JOB_TOKEN can read
notes but not write them, which is why detection never falls back to it for posting.
"""

from __future__ import annotations

from typing import Any, Iterator
from urllib.parse import quote

from lepton_ci.forge.http import ForgeError, HttpClient

BODY_LIMIT = 1_000_000
STATES = {"success": "success", "failure": "failed", "error": "failed", "pending": "pending"}


class GitLabAPI:
    kind = "gitlab"
    body_limit = BODY_LIMIT

    def __init__(self, api_url: str, project: str, token: str, **http_options: Any) -> None:
        self.project = quote(str(project), safe="")
        self.http = HttpClient(api_url, headers={"PRIVATE-TOKEN": token, "User-Agent": "lepton-ci"}, **http_options)

    def _notes(self, iid: int) -> str:
        return f"/projects/{self.project}/merge_requests/{iid}/notes"

    def list_comments(self, number: int) -> Iterator[dict[str, Any]]:
        for n in self.http.paginate(self._notes(number), {"per_page": 100, "sort": "asc", "order_by": "created_at"}):
            if not n.get("system"):
                yield {"id": n["id"], "body": n.get("body") or "", "url": None}

    def create_comment(self, number: int, body: str) -> dict[str, Any]:
        try:
            n = self.http.request("POST", self._notes(number), json_body={"body": body}).body
        except ForgeError as exc:
            if exc.status in (401, 403):
                raise ForgeError(f"{exc.message} — posting merge request notes needs a token with the `api` scope "
                                 "(CI_JOB_TOKEN cannot post notes); set LEPTON_CI_GITLAB_TOKEN", status=exc.status) from None
            raise
        return {"id": n["id"], "url": None}

    def update_comment(self, number: int, comment_id: int, body: str) -> dict[str, Any]:
        n = self.http.request("PUT", f"{self._notes(number)}/{comment_id}", json_body={"body": body}).body
        return {"id": n["id"], "url": None}

    def set_status(self, sha: str, state: str, context: str, description: str, target_url: str | None) -> None:
        body: dict[str, Any] = {"state": STATES[state], "name": context, "description": description[:255]}
        if target_url:
            body["target_url"] = target_url
        self.http.request("POST", f"/projects/{self.project}/statuses/{sha}", json_body=body)
