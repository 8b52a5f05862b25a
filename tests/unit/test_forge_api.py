"""The ForgeAPI protocol and the one table that chooses an implementation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from lepton_ci.errors import UserError
from lepton_ci.forge import publish
from lepton_ci.forge.base import FORGES, ForgeAPI
from lepton_ci.forge.detect import ForgeContext
from lepton_ci.forge.github import GitHubAPI
from lepton_ci.forge.gitlab import GitLabAPI
from lepton_ci.forge.http import ForgeError, HttpClient
from lepton_ci.plugins import load


@pytest.mark.parametrize(("kind", "cls"), [("github", GitHubAPI), ("gitlab", GitLabAPI)])
def test_table_loads_each_forge_and_it_implements_the_protocol(kind: str, cls: type) -> None:
    assert load(FORGES, kind, "forge", protocol=ForgeAPI) is cls
    api = cls("https://api.example", "o/r", "tok-123456")
    assert isinstance(api, ForgeAPI)
    assert api.kind == kind and api.body_limit > 0 and isinstance(api.http, HttpClient)
    assert api.http.max_retries >= 0


def test_a_class_missing_protocol_members_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class Half:
        kind = "half"
        body_limit = 10

        def list_comments(self, number: int) -> Any:
            return iter(())

    import lepton_ci.forge.base as base

    monkeypatch.setattr(base, "Half", Half, raising=False)
    with pytest.raises(UserError, match="lacks create_comment, http, open_pull_requests_for, set_status, update_comment"):
        load({"half": "lepton_ci.forge.base:Half"}, "half", "forge", protocol=ForgeAPI)


def test_make_api_uses_the_table_and_names_the_variable_of_a_bad_url() -> None:
    ctx = ForgeContext(kind="gitlab", api_url="https://gitlab.example/api/v4", repository="4242", token="t-123456",
                       token_source="LEPTON_CI_GITLAB_TOKEN", can_write=True)
    assert isinstance(publish.make_api(ctx), GitLabAPI)
    ctx.api_url, ctx.api_url_source = "gitlab.example/api/v4", "CI_API_V4_URL"
    with pytest.raises(ForgeError, match=r"CI_API_V4_URL.*must start with http:// or https://"):
        publish.make_api(ctx)
    with pytest.raises(ForgeError, match="cannot post from local"):
        publish.make_api(ForgeContext(kind="local", read_only_reason="not in CI"))


def test_publish_reaches_into_no_private_member_of_an_api_or_client() -> None:
    source = Path(publish.__file__).read_text()
    assert not re.findall(r"\b(api|http|self\.http|client)\._\w+", source)


def test_workflow_commands_default_to_stderr(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ctx = ForgeContext(kind="github", token="ghp_stderrCanary00000001\nsecond-line-of-it", pr_number=7,
                       can_write=False, read_only_reason="fork")
    publish.publish("# r\n", ctx, model="toy", gate=None, post=True, summary=False, status=False)
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[:2] == ["::add-mask::ghp_stderrCanary00000001", "::add-mask::second-line-of-it"]
    assert "::notice title=lepton-ci::comment not posted: fork" in err
