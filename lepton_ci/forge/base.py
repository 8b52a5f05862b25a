"""The one protocol every forge API implements, and the one table that names the implementations.

`publish` talks to GitHub and GitLab only through `ForgeAPI`, so a third forge (Gitea, Bitbucket) is a
module and a table entry, and publish never reaches into one forge's private members. The table holds
strings so that importing it costs nothing; `lepton_ci.plugins.load` imports the chosen module and checks
the class against the protocol. mypy checks both classes against it (see the end of github.py and
gitlab.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

if TYPE_CHECKING:
    from lepton_ci.forge.http import HttpClient

#: forge kind (ForgeContext.kind) -> "module:attr" of its ForgeAPI class
FORGES: Final[dict[str, str]] = {
    "github": "lepton_ci.forge.github:GitHubAPI",
    "gitlab": "lepton_ci.forge.gitlab:GitLabAPI",
}


@runtime_checkable
class ForgeAPI(Protocol):
    """What publishing a report needs from a forge: comments on a PR/MR, a commit status, and the HTTP
    client (its retry count, backoff and masked log), so a caller can retry a write it must look before
    repeating.

    Comments are plain dicts `{"id": int, "body": str, "url": str | None}`; errors are `ForgeError`
    (or `AmbiguousWrite` when a create may have happened), with one line that says what to do.
    """

    #: "github" or "gitlab": the ForgeContext.kind this class serves
    kind: str
    #: the longest comment body the forge accepts, in characters
    body_limit: int

    @property
    def http(self) -> HttpClient:
        """The client every request goes through (public: callers read max_retries, backoff_s, sleep and
        log_masked from it)."""
        ...

    def list_comments(self, number: int) -> Iterator[dict[str, Any]]:
        """Every comment (user notes only) on PR/MR `number`, across all pages, oldest first."""
        ...

    def create_comment(self, number: int, body: str) -> dict[str, Any]:
        """Post a new comment; returns {"id", "url"}. Not idempotent: may raise AmbiguousWrite."""
        ...

    def update_comment(self, number: int, comment_id: int, body: str) -> dict[str, Any]:
        """Replace the body of comment `comment_id`; returns {"id", "url"}. 404 when it was deleted."""
        ...

    def set_status(self, sha: str, state: str, context: str, description: str, target_url: str | None) -> None:
        """Set commit status `context` on `sha`; state is success, failure, error or pending."""
        ...

    def open_pull_requests_for(self, sha: str, branch: str | None) -> list[int]:
        """Open PRs/MRs of this repository whose head is commit `sha` (and, when given, branch `branch`):
        how a push/branch pipeline finds where its report belongs, like CML does."""
        ...


class ForgeAPIFactory(Protocol):
    """The constructor every ForgeAPI class has: what `FORGES` entries are called with."""

    def __call__(
        self, api_url: str, repository: str, token: str, *, token_source: str | None = None, **http_options: Any
    ) -> ForgeAPI: ...
