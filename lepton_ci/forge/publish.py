"""Publish a report where the CI shows it: one sticky PR/MR comment, the job summary, step outputs,
annotations for failed gate rules, and a commit status with the gate verdict.

A forge that cannot be written to (fork PR, no token, job token on GitLab) never fails the job: the
report goes to the job summary and a notice says why.

Workflow commands (`::add-mask::`, `::error`, `::notice`) go to stderr by default: the GitHub runner reads
them from stderr as well as stdout, and stdout is the report itself (`lepton-ci report --post > report.md`
must not capture a token in an `::add-mask::` line).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lepton_ci.forge.base import FORGES, ForgeAPI, ForgeAPIFactory
from lepton_ci.forge.detect import ForgeContext
from lepton_ci.forge.http import AmbiguousWrite, ForgeError, mask, mask_secrets, register_secret, url_problem
from lepton_ci.forge.outputs import emit as emit_outputs
from lepton_ci.records import GateRecord

SUMMARY_LIMIT = 1024 * 1024  # GitHub's job summary limit: 1 MiB per step (bytes)
STATUS_CONTEXT = "lepton-ci/gate"


def sticky_marker(model: str, workflow: str | None) -> str:
    clean = lambda s: re.sub(r"\s+", "_", s).replace("--", "-_")  # noqa: E731 - keep the HTML comment well formed
    return f"<!-- lepton-ci:sticky model={clean(model)} workflow={clean(workflow or 'default')} -->"


def _close_open_blocks(text: str) -> str:
    """What to append so a cut-off markdown document does not swallow what follows (code fence, details)."""
    closers = ""
    if sum(1 for line in text.splitlines() if line.lstrip().startswith("```")) % 2:
        closers += "\n```"
    opened = len(re.findall(r"<details\b", text)) - len(re.findall(r"</details>", text))
    closers += "\n</details>" * max(0, opened)
    return closers


def truncate(
    body: str, limit: int, note_url: str | None = None, *, unit: str = "chars", what: str | None = None
) -> str:
    """Fit `body` under `limit` characters (or UTF-8 bytes with unit="bytes"), cutting at a line break and
    saying so. Open code fences and <details> blocks are closed so the note shows. `what` names the limit
    in the note (default: the comment limit, pointing at the job summary for the full text)."""
    size = (lambda s: len(s.encode("utf-8"))) if unit == "bytes" else len
    if size(body) <= limit:
        return body
    if what is None:
        where = (
            f" The full report is in the [job summary]({note_url})."
            if note_url
            else " The full report is in the job summary."
        )
        note = f"\n\n> ✂️ Report truncated to fit the {limit:,}-character comment limit.{where}\n"
    else:
        note = f"\n\n> ✂️ Report truncated to fit the {what}.\n"
    budget = limit - size(note) - 64
    while True:
        if unit == "bytes":
            cut = body.encode("utf-8")[: max(0, budget)].decode("utf-8", errors="ignore")
        else:
            cut = body[: max(0, budget)]
        if "\n" in cut:
            cut = cut[: cut.rfind("\n")]
        out = cut + _close_open_blocks(cut) + note
        if size(out) <= limit or budget <= 0:
            return out if size(out) <= limit else note[:limit]
        budget -= size(out) - limit + 16


def post_sticky(api: ForgeAPI, number: int, body: str, marker: str) -> dict[str, Any]:
    """Create or update the one comment that starts with `marker`, searching every page of comments.

    A create that may have reached the server but got no answer (reset, timeout, 5xx) is never repeated
    blindly: the comments are listed again first, and a comment that did get created is kept.
    """
    body = truncate(marker + "\n" + mask_secrets(body), api.body_limit)
    http = api.http

    def find() -> list[dict[str, Any]]:
        return [c for c in api.list_comments(number) if c["body"].lstrip().startswith(marker)]

    existing = find()
    attempts = http.max_retries + 1
    for attempt in range(attempts):
        if existing:
            keep = existing[0]
            extra = {"duplicates": len(existing) - 1} if len(existing) > 1 else {}
            if keep["body"] == body:
                return {
                    "action": "unchanged" if attempt == 0 else "created",
                    "id": keep["id"],
                    "url": keep.get("url"),
                    **extra,
                }
            try:
                c = api.update_comment(number, keep["id"], body)
            except ForgeError as exc:
                if exc.status != 404:
                    raise
                existing = [x for x in existing if x["id"] != keep["id"]]  # deleted since we listed: post anew
                continue
            return {"action": "updated", "id": c["id"], "url": c.get("url") or keep.get("url"), **extra}
        try:
            c = api.create_comment(number, body)
            return {"action": "created", "id": c["id"], "url": c.get("url")}
        except AmbiguousWrite as exc:
            if attempt == attempts - 1:
                raise ForgeError(
                    f"cannot post the comment: {exc.message} (gave up after {attempts} attempts)", status=exc.status
                ) from None
            wait = http.backoff_s * 2**attempt
            http.log_masked(f"warning: {exc.message}; looking for the comment before trying again in {wait:.1f}s")
            http.sleep(wait)
            existing = find()
    raise AssertionError("unreachable")  # pragma: no cover


def make_api(ctx: ForgeContext, **http_options: Any) -> ForgeAPI:
    """The ForgeAPI for the detected forge, from the one FORGES table; a malformed API URL is refused here
    with the variable it came from, before any request."""
    if ctx.kind not in FORGES:
        raise ForgeError(f"cannot post from {ctx.kind}: {ctx.read_only_reason}")
    problem = url_problem(ctx.api_url or "")
    if problem:
        source = f" (from {ctx.api_url_source})" if ctx.api_url_source else ""
        raise ForgeError(f"the {ctx.kind} API URL {ctx.api_url!r}{source} is not valid: {problem}")
    from lepton_ci.plugins import load

    factory: ForgeAPIFactory = load(FORGES, ctx.kind, "forge", protocol=ForgeAPI)
    return factory(
        ctx.api_url or "", ctx.repository or "", ctx.token or "", token_source=ctx.token_source, **http_options
    )


def stderr_line(line: str) -> None:
    """Where workflow commands go by default: stderr, which the runner reads, never the report's stdout."""
    print(line, file=sys.stderr, flush=True)


def mask_commands(token: str | None) -> list[str]:
    """`::add-mask::` lines for a token, one per line of it: a line break would end the command and print
    the rest of the token in clear."""
    if not token:
        return []
    return [f"::add-mask::{line.strip()}" for line in token.splitlines() if line.strip()]


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


_escape_annotation = _escape_data  # the name report.py and older callers use


def gate_annotations(gate: GateRecord | None, config_file: str, rule_lines: dict[str, int]) -> list[str]:
    """`::error file=…,line=…::` lines for failed gate rules (GitHub shows them on the PR's files)."""
    out = []
    for r in gate.results if gate else []:
        if not r["passed"]:
            line = rule_lines.get(r["metric"], 1)
            title = _escape_property(f"lepton-ci gate: {r['metric']} {r['rule']}")
            out.append(
                f"::error file={_escape_property(config_file)},line={line},title={title}::"
                f"{_escape_data(mask(str(r['reason'])))}"
            )
    return out


@dataclass
class PublishResult:
    comment: dict[str, Any] | None = None
    summary_written: bool = False
    status_set: bool = False
    notices: list[str] = field(default_factory=list)


def _write_summary(path: Any, report: str, notices: list[str]) -> None:
    """Append to the step's job summary, within the 1 MiB GitHub accepts per step."""
    try:
        used = path.stat().st_size
    except OSError:
        used = 0
    text = mask_secrets(report)
    if notices:
        text = text.rstrip("\n") + "\n\n" + "".join(f"> lepton-ci: {mask(n)}\n" for n in notices)
    room = SUMMARY_LIMIT - used - 1
    if room <= 200:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(truncate(text, room, unit="bytes", what="job summary's 1 MiB limit") + "\n")


def _find_pull_request(ctx: ForgeContext, result: PublishResult, http_options: dict[str, Any] | None) -> None:
    """A push (GitHub) or branch pipeline (GitLab) carries no PR/MR number: ask the forge which open one has
    this commit as its head, and post there. Exactly one match is used; none or several is a notice, and a
    failed lookup is a notice too (the report itself is out either way, and the gate already decided)."""
    assert ctx.head_sha is not None
    try:
        found = make_api(ctx, **(http_options or {})).open_pull_requests_for(ctx.head_sha, ctx.branch)
    except ForgeError as exc:
        result.notices.append(f"could not look up the pull/merge request of commit {ctx.head_sha[:12]}: {exc.message}")
        return
    if len(found) == 1:
        ctx.pr_number, ctx.pr_found_by = found[0], "commit"
    elif len(found) > 1:
        listed = ", ".join(f"#{n}" for n in found)
        result.notices.append(
            f"commit {ctx.head_sha[:12]} is the head of several open pull/merge requests ({listed}): comment not "
            "posted; run the report in the pull/merge request's own pipeline"
        )


def publish(
    report: str,
    ctx: ForgeContext,
    *,
    model: str,
    gate: GateRecord | None,
    post: bool = True,
    summary: bool = True,
    status: bool = True,
    emit: Callable[[str], None] = stderr_line,
    http_options: dict[str, Any] | None = None,
    annotation_lines: Sequence[str] = (),
) -> PublishResult:
    """Post, summarise and annotate. `emit` receives GitHub workflow commands (default: stderr)."""
    register_secret(ctx.token)
    if ctx.kind == "github":
        for line in mask_commands(ctx.token):
            emit(line)
    result = PublishResult()
    if post and ctx.pr_number is None and ctx.can_write and ctx.head_sha and ctx.kind in FORGES:
        _find_pull_request(ctx, result, http_options)
    if post:
        if ctx.pr_number is None:
            result.notices.append(f"no pull/merge request in this {ctx.kind} run: comment not posted")
        elif not ctx.can_write:
            result.notices.append(f"comment not posted: {ctx.read_only_reason}")
    if summary and ctx.summary_path is not None:
        _write_summary(ctx.summary_path, report, result.notices)
        result.summary_written = True
    if ctx.kind == "github":
        for line in annotation_lines:
            emit(line)
    if post and ctx.pr_number is not None and ctx.can_write:
        api = make_api(ctx, **(http_options or {}))
        result.comment = post_sticky(api, ctx.pr_number, report, sticky_marker(model, ctx.workflow))
        if ctx.kind == "gitlab" and ctx.project_url and not result.comment.get("url"):
            result.comment["url"] = f"{ctx.project_url}/-/merge_requests/{ctx.pr_number}#note_{result.comment['id']}"
    if status and gate is not None and ctx.can_write and ctx.head_sha and ctx.kind in ("github", "gitlab"):
        api = make_api(ctx, **(http_options or {}))
        failed = sum(1 for r in gate.results if not r["passed"])
        desc = "all gate checks passed" if gate.passed else f"{failed} of {len(gate.results)} gate checks failed"
        try:
            api.set_status(
                ctx.head_sha, "success" if gate.passed else "failure", f"{STATUS_CONTEXT} ({model})", desc, ctx.run_url
            )
            result.status_set = True
        except ForgeError as exc:
            if exc.status not in (403, 404, 422):
                raise
            # the report is out; a missing `statuses: write` permission should not fail the job
            result.notices.append(f"commit status not set: {exc.message}")
    if ctx.kind == "github":
        for n in result.notices:
            emit(f"::notice title=lepton-ci::{_escape_data(mask(n))}")
    comment = result.comment or {}
    emit_outputs(
        {
            "comment-url": comment.get("url") or "",
            "comment-id": comment.get("id") or "",
            "comment-action": comment.get("action") or "",
            "summary-written": str(result.summary_written).lower(),
        }
    )
    return result
