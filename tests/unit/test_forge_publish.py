"""Pieces of lepton_ci.forge that need no server: truncation, markers, annotations, masking, links, outputs."""

from __future__ import annotations

from pathlib import Path

from lepton_ci.forge.http import ForgeError, _next_link, mask, mask_secrets, register_secret
from lepton_ci.forge.outputs import emit
from lepton_ci.forge.publish import gate_annotations, sticky_marker, truncate
from lepton_ci.records import GateRecord


def test_truncate_keeps_short_bodies_and_cuts_long_ones_at_a_line() -> None:
    assert truncate("short\n", 100) == "short\n"
    body = "".join(f"line {i}\n" for i in range(10_000))
    out = truncate(body, 5_000)
    assert len(out) <= 5_000 and out.startswith("line 0\n")
    assert "Report truncated to fit the 5,000-character comment limit. The full report is in the job summary." in out
    before_note = out.split("\n\n> ✂️")[0]
    assert before_note.splitlines()[-1].startswith("line ") and before_note + "\n" in body


def test_truncate_closes_an_open_code_fence_and_details() -> None:
    body = "# r\n<details><summary>charts</summary>\n\n```mermaid\n" + "xychart-beta\n" * 1000 + "```\n</details>\n"
    out = truncate(body, 2_000, note_url="https://example.com/run/1")
    assert len(out) <= 2_000
    head, note = out.split("\n\n> ✂️")
    assert head.endswith("\n```\n</details>") and "[job summary](https://example.com/run/1)" in note


def test_truncate_in_bytes_for_the_summary() -> None:
    body = "✅ 🟢 ▲\n" * 100_000
    out = truncate(body, 10_000, unit="bytes", what="job summary's 1 MiB limit")
    assert len(out.encode()) <= 10_000 and "job summary's 1 MiB limit" in out
    out.encode("utf-8")  # never a split character


def test_sticky_marker_is_one_well_formed_html_comment() -> None:
    assert sticky_marker("digits", None) == "<!-- lepton-ci:sticky model=digits workflow=default -->"
    m = sticky_marker("my model", "CI -- nightly")
    assert m == "<!-- lepton-ci:sticky model=my_model workflow=CI_-__nightly -->"
    assert "--" not in m[4:-3]


def test_annotations_escape_properties_and_data() -> None:
    gate = GateRecord(model="m", verdict="fail", results=[
        {"metric": "eval.acc", "rule": "min", "passed": False, "reason": "0.9 < min 0.95\n100% sure"},
        {"metric": "loss", "rule": "max", "passed": True, "reason": "ok"}])
    [line] = gate_annotations(gate, "cfg/lepton, v2.yml", {"eval.acc": 14})
    assert line == ("::error file=cfg/lepton%2C v2.yml,line=14,title=lepton-ci gate%3A eval.acc min::"
                    "0.9 < min 0.95%0A100%25 sure")
    assert gate_annotations(None, "lepton.yml", {}) == []


def test_mask_registered_secrets_and_auth_headers() -> None:
    register_secret("s3cr3t-value")
    register_secret("abc")  # too short to mask safely: ignored
    assert mask("x s3cr3t-value y abc") == "x *** y abc"
    assert mask('{"Authorization": "Bearer zzzzzzzz", "PRIVATE-TOKEN": "qqqqqqqq"}') == \
        '{"Authorization": "Bearer ***", "PRIVATE-TOKEN": "***"}'
    assert mask_secrets("Authorization: keep s3cr3t-value") == "Authorization: keep ***"
    e = ForgeError("failed with s3cr3t-value\nin it")
    assert str(e) == "failed with *** in it"


def test_next_link() -> None:
    link = ('<https://api.github.com/repositories/1/issues/2/comments?page=1>; rel="prev", '
            '<https://api.github.com/repositories/1/issues/2/comments?page=3>; rel="next", '
            '<https://api.github.com/repositories/1/issues/2/comments?page=5>; rel="last"')
    assert _next_link(link) == "https://api.github.com/repositories/1/issues/2/comments?page=3"
    assert _next_link('<https://x/a?page=5>; rel="last"') is None
    assert _next_link(None) is None


def test_outputs_github_and_dotenv(tmp_path: Path) -> None:
    out = tmp_path / "gh"
    emit({"comment-url": "https://x/1", "note": "two\nlines"}, {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(out)})
    text = out.read_text()
    assert text.startswith("comment-url=https://x/1\nnote<<LEPTON_") and "\ntwo\nlines\nLEPTON_" in text
    dotenv = tmp_path / "d.env"
    emit({"comment-url": "a"}, {"LEPTON_CI_DOTENV": str(dotenv)})
    emit({"comment-url": "b", "comment-id": 5}, {"LEPTON_CI_DOTENV": str(dotenv)})
    assert dotenv.read_text() == "LEPTON_COMMENT_URL=b\nLEPTON_COMMENT_ID=5\n"
