"""Publish a report where the CI shows it: one sticky PR/MR comment, the job summary, step outputs,
annotations for failed gate rules, and a commit status with the gate verdict.

A forge that cannot be written to (fork PR, no token, job token on GitLab) never fails the job: the
report goes to the job summary and a notice says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lepton_ci.forge.detect import ForgeContext
from lepton_ci.forge.http import ForgeError, mask, register_secret
from lepton_ci.forge.outputs import emit as emit_outputs
from lepton_ci.records import GateRecord

SUMMARY_LIMIT = 1024 * 1024  # GitHub's per-step job summary limit
STATUS_CONTEXT = "lepton-ci/gate"


def sticky_marker(model: str, workflow: str | None) -> str:
    return f"<!-- lepton-ci:sticky model={model} workflow={workflow or 'default'} -->"


def truncate(body: str, limit: int, note_url: str | None = None) -> str:
    """Fit `body` under `limit` characters, cutting at a line break and saying so."""
    if len(body) <= limit:
        return body
    where = f" The full report is in the [job summary]({note_url})." if note_url else " The full report is in the job summary."
    note = f"\n\n> ✂️ Report truncated to fit the {limit:,}-character comment limit.{where}\n"
    cut = body[: limit - len(note)]
    cut = cut[: cut.rfind("\n")] if "\n" in cut else cut
    return cut + note


def post_sticky(api: Any, number: int, body: str, marker: str) -> dict[str, Any]:
    """Create or update the one comment carrying `marker`, searching every page of comments."""
    body = truncate(marker + "\n" + body, api.body_limit)
    existing = [c for c in api.list_comments(number) if marker in c["body"]]
    if existing:
        keep = existing[0]
        if keep["body"] == body:
            return {"action": "unchanged", "id": keep["id"], "url": keep.get("url")}
        c = api.update_comment(number, keep["id"], body)
        return {"action": "updated", "id": c["id"], "url": c.get("url") or keep.get("url"), "duplicates": len(existing) - 1}
    c = api.create_comment(number, body)
    return {"action": "created", "id": c["id"], "url": c.get("url")}


def make_api(ctx: ForgeContext, **http_options: Any) -> Any:
    if ctx.kind == "github":
        from lepton_ci.forge.github import GitHubAPI

        return GitHubAPI(ctx.api_url or "", ctx.repository or "", ctx.token or "", **http_options)
    if ctx.kind == "gitlab":
        from lepton_ci.forge.gitlab import GitLabAPI

        return GitLabAPI(ctx.api_url or "", ctx.repository or "", ctx.token or "", **http_options)
    raise ForgeError(f"cannot post from {ctx.kind}: {ctx.read_only_reason}")


def _escape_annotation(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def annotations(gate: GateRecord | None, config_file: str, rule_lines: dict[str, int]) -> list[str]:
    """`::error file=…,line=…::` lines for failed gate rules (GitHub shows them on the PR's files)."""
    out = []
    for r in (gate.results if gate else []):
        if not r["passed"]:
            line = rule_lines.get(r["metric"], 1)
            title = _escape_annotation(f"lepton-ci gate: {r['metric']} {r['rule']}").replace(",", "%2C").replace(":", "%3A")
            out.append(f"::error file={config_file},line={line},title={title}::{_escape_annotation(mask(str(r['reason'])))}")
    return out


@dataclass
class PublishResult:
    comment: dict[str, Any] | None = None
    summary_written: bool = False
    status_set: bool = False
    notices: list[str] = field(default_factory=list)


def publish(report: str, ctx: ForgeContext, *, model: str, gate: GateRecord | None, post: bool = True,
            summary: bool = True, status: bool = True, emit: Callable[[str], None] = print,
            http_options: dict[str, Any] | None = None, annotation_lines: list[str] = ()) -> PublishResult:
    register_secret(ctx.token)
    if ctx.kind == "github" and ctx.token:
        emit(f"::add-mask::{ctx.token}")
    result = PublishResult()
    if summary and ctx.summary_path is not None:
        with open(ctx.summary_path, "a", encoding="utf-8") as f:
            f.write(truncate(report, SUMMARY_LIMIT) + "\n")
        result.summary_written = True
    if ctx.kind == "github":
        for line in annotation_lines:
            emit(line)
    if post:
        if ctx.pr_number is None:
            result.notices.append(f"no pull/merge request in this {ctx.kind} run: comment not posted")
        elif not ctx.can_write:
            result.notices.append(f"comment not posted: {ctx.read_only_reason}")
        else:
            api = make_api(ctx, **(http_options or {}))
            result.comment = post_sticky(api, ctx.pr_number, report, sticky_marker(model, ctx.workflow))
            if ctx.kind == "gitlab" and ctx.project_url and not result.comment.get("url"):
                result.comment["url"] = f"{ctx.project_url}/-/merge_requests/{ctx.pr_number}#note_{result.comment['id']}"
    if status and gate is not None and ctx.can_write and ctx.head_sha and ctx.kind in ("github", "gitlab"):
        api = make_api(ctx, **(http_options or {}))
        failed = sum(1 for r in gate.results if not r["passed"])
        desc = "all gate checks passed" if gate.passed else f"{failed} of {len(gate.results)} gate checks failed"
        api.set_status(ctx.head_sha, "success" if gate.passed else "failure", f"{STATUS_CONTEXT} ({model})", desc, ctx.run_url)
        result.status_set = True
    if ctx.kind == "github":
        for n in result.notices:
            emit(f"::notice title=lepton-ci::{_escape_annotation(mask(n))}")
    emit_outputs({"comment-url": (result.comment or {}).get("url") or "", "comment-id": (result.comment or {}).get("id") or ""})
    return result
