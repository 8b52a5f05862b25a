"""A GitLab REST v4 stand-in for merge request notes and commit statuses, held to GitLab's documented contract.

GitLab publishes no machine-readable OpenAPI description for these endpoints, so the contract is written
here as JSON Schema, from the documentation:
  - Notes API, merge requests: https://docs.gitlab.com/api/notes/#merge-requests
    (GET/POST /projects/:id/merge_requests/:merge_request_iid/notes, PUT .../notes/:note_id; list
    parameters sort=asc|desc (default desc) and order_by=created_at|updated_at; note bodies are limited
    to 1,000,000 characters)
  - Pagination: https://docs.gitlab.com/api/rest/#offset-based-pagination (page, per_page at most 100;
    x-page, x-per-page, x-next-page, x-prev-page, x-total, x-total-pages and Link headers)
  - Commit statuses: https://docs.gitlab.com/api/commits/#set-the-pipeline-status-of-a-commit
    (POST /projects/:id/statuses/:sha with state pending|running|success|failed|canceled|skipped, name,
    target_url, description, ...)
  - Merge requests of a commit: https://docs.gitlab.com/api/commits/#list-merge-requests-associated-with-a-commit
    (GET /projects/:id/repository/commits/:sha/merge_requests; the merge request objects of
    https://docs.gitlab.com/api/merge_requests/#list-merge-requests: id, iid, project_id, title, state
    opened|closed|locked|merged, source_branch, target_branch, source_project_id, target_project_id, sha,
    web_url, ...)
  - Authentication: https://docs.gitlab.com/api/rest/authentication/ (PRIVATE-TOKEN header or
    `Authorization: Bearer`), and the job token's limits: https://docs.gitlab.com/ci/jobs/ci_job_token/
    (a CI_JOB_TOKEN cannot create or edit notes: 403).

Every request is validated (unknown routes 404, bad parameters 400, missing auth 401) and recorded;
contract violations go to `violations`. Responses are validated against the note and status schemas.

CLI (for gitlab-ci-local pipelines): python -m tests.support.gitlab_standin --port P --state FILE
[--token T] [--job-token T] [--project 4242] [--mrs 1,2] [--seed 1:250] [--mr-for-commit IID:SHA:BRANCH]
[--fault OP=SPEC]...
Operation names for faults: notes/list, notes/create, notes/update, statuses/create, commits/merge_requests.
"""

from __future__ import annotations

import argparse
import itertools
import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote, urlencode

from tests.support import Reply, Request, StandIn, serve_main

NOTE_LIMIT = 1_000_000

_USER = {
    "type": "object",
    "required": ["id", "username", "name", "state", "avatar_url", "web_url"],
    "properties": {"id": {"type": "integer"}, "username": {"type": "string"}, "name": {"type": "string"},
                   "state": {"type": "string"}, "avatar_url": {"type": ["string", "null"]}, "web_url": {"type": "string"}},
}
SCHEMAS: dict[str, dict[str, Any]] = {
    # requests
    "notes/list:query": {
        "type": "object", "additionalProperties": False,
        "properties": {"per_page": {"type": "integer", "minimum": 1, "maximum": 100}, "page": {"type": "integer", "minimum": 1},
                       "sort": {"enum": ["asc", "desc"]}, "order_by": {"enum": ["created_at", "updated_at"]}},
    },
    "notes/create:body": {
        "type": "object", "additionalProperties": False, "required": ["body"],
        "properties": {"body": {"type": "string", "minLength": 1}, "internal": {"type": "boolean"},
                       "confidential": {"type": "boolean"}, "created_at": {"type": "string"},
                       "merge_request_diff_head_sha": {"type": "string"}},
    },
    "notes/update:body": {
        "type": "object", "additionalProperties": False, "required": ["body"],
        "properties": {"body": {"type": "string", "minLength": 1}, "confidential": {"type": "boolean"}},
    },
    "statuses/create:body": {
        "type": "object", "additionalProperties": False, "required": ["state"],
        "properties": {"state": {"enum": ["pending", "running", "success", "failed", "canceled", "skipped"]},
                       "ref": {"type": "string"}, "name": {"type": "string"}, "context": {"type": "string"},
                       "target_url": {"type": "string"}, "description": {"type": "string"},
                       "coverage": {"type": "number"}, "pipeline_id": {"type": "integer"}},
    },
    # responses
    "note": {
        "type": "object",
        "required": ["id", "type", "body", "author", "created_at", "updated_at", "system", "noteable_id",
                     "noteable_type", "project_id", "noteable_iid", "resolvable", "confidential", "internal"],
        "properties": {"id": {"type": "integer"}, "type": {"type": ["string", "null"]}, "body": {"type": "string"},
                       "attachment": {"type": "null"}, "author": _USER, "created_at": {"type": "string"},
                       "updated_at": {"type": "string"}, "system": {"type": "boolean"}, "noteable_id": {"type": "integer"},
                       "noteable_type": {"enum": ["MergeRequest"]}, "project_id": {"type": "integer"},
                       "noteable_iid": {"type": "integer"}, "resolvable": {"type": "boolean"},
                       "confidential": {"type": "boolean"}, "internal": {"type": "boolean"}},
    },
    "status": {
        "type": "object",
        "required": ["id", "sha", "ref", "status", "name", "target_url", "description", "created_at", "started_at",
                     "finished_at", "allow_failure", "coverage", "author"],
        "properties": {"id": {"type": "integer"}, "sha": {"type": "string"}, "ref": {"type": ["string", "null"]},
                       "status": {"enum": ["pending", "running", "success", "failed", "canceled", "skipped"]},
                       "name": {"type": "string"}, "target_url": {"type": ["string", "null"]},
                       "description": {"type": ["string", "null"]}, "created_at": {"type": "string"},
                       "started_at": {"type": ["string", "null"]}, "finished_at": {"type": ["string", "null"]},
                       "allow_failure": {"type": "boolean"}, "coverage": {"type": ["number", "null"]}, "author": _USER},
    },
    "merge_request": {
        "type": "object",
        "required": ["id", "iid", "project_id", "title", "state", "source_branch", "target_branch",
                     "source_project_id", "target_project_id", "sha", "web_url", "author", "created_at", "updated_at",
                     "draft", "merge_status", "references"],
        "properties": {"id": {"type": "integer"}, "iid": {"type": "integer"}, "project_id": {"type": "integer"},
                       "title": {"type": "string"}, "description": {"type": ["string", "null"]},
                       "state": {"enum": ["opened", "closed", "locked", "merged"]},
                       "source_branch": {"type": "string"}, "target_branch": {"type": "string"},
                       "source_project_id": {"type": "integer"}, "target_project_id": {"type": "integer"},
                       "sha": {"type": "string", "pattern": "^[0-9a-f]{40}$"}, "web_url": {"type": "string"},
                       "author": _USER, "created_at": {"type": "string"}, "updated_at": {"type": "string"},
                       "draft": {"type": "boolean"}, "merge_status": {"type": "string"},
                       "references": {"type": "object", "required": ["short", "relative", "full"]}},
    },
    "commits/merge_requests:query": {
        "type": "object", "additionalProperties": False,
        "properties": {"per_page": {"type": "integer", "minimum": 1, "maximum": 100},
                       "page": {"type": "integer", "minimum": 1}},
    },
    "error": {"type": "object", "anyOf": [{"required": ["message"]}, {"required": ["error"]}]},
}
SCHEMAS["notes"] = {"type": "array", "items": SCHEMAS["note"]}
SCHEMAS["merge_requests"] = {"type": "array", "items": SCHEMAS["merge_request"]}

ROUTES = [  # (method, regex over the path after /api/v4, operation)
    ("GET", re.compile(r"^/projects/([^/]+)/merge_requests/([^/]+)/notes$"), "notes/list"),
    ("POST", re.compile(r"^/projects/([^/]+)/merge_requests/([^/]+)/notes$"), "notes/create"),
    ("PUT", re.compile(r"^/projects/([^/]+)/merge_requests/([^/]+)/notes/([^/]+)$"), "notes/update"),
    ("POST", re.compile(r"^/projects/([^/]+)/statuses/([^/]+)$"), "statuses/create"),
    ("GET", re.compile(r"^/projects/([^/]+)/repository/commits/([^/]+)/merge_requests$"), "commits/merge_requests"),
]


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")


class GitLabStandIn(StandIn):
    name = "GitLab stand-in"
    BOT = {"id": 9001, "username": "project_4242_bot", "name": "lepton-ci bot"}
    HUMAN = {"id": 17, "username": "reviewer", "name": "A Reviewer"}

    def __init__(self, *, project_id: int = 4242, project_path: str = "lepton/demo", tokens: set[str] | None = None,
                 job_tokens: set[str] | None = None, read_only_tokens: set[str] | None = None, mrs: set[int] | None = None,
                 any_project: bool = True, **kw: Any) -> None:
        super().__init__(**kw)
        import jsonschema

        self.project_id, self.project_path = project_id, project_path
        self.any_project = any_project  # accept any project id (as that project); False: only project_id/project_path
        self.tokens = tokens  # None: any PRIVATE-TOKEN is accepted
        self.job_tokens = job_tokens  # None: any JOB-TOKEN is accepted (for reads)
        self.read_only_tokens = set(read_only_tokens or ())  # e.g. read_api scope
        self.mrs = mrs
        self.notes_by_id: dict[int, dict[str, Any]] = {}
        self.statuses: list[dict[str, Any]] = []
        self.merge_requests: list[dict[str, Any]] = []  # add_merge_request(): what the commit lookup answers
        self._ids = itertools.count(500_001)
        self._clock = datetime(2025, 1, 1, tzinfo=timezone.utc)
        self._validators = {k: jsonschema.Draft7Validator(v) for k, v in SCHEMAS.items()}

    @property
    def url(self) -> str:
        return self.origin + "/api/v4"

    # ---- state -----------------------------------------------------------------------------------------
    def _now(self) -> str:
        with self.lock:
            self._clock += timedelta(seconds=1)
            return _iso(self._clock)

    def _user(self, who: dict[str, Any]) -> dict[str, Any]:
        return {**who, "state": "active", "avatar_url": None, "web_url": f"{self.origin}/{who['username']}"}

    def add_note(self, iid: int, body: str, user: dict[str, Any] | None = None, system: bool = False) -> dict[str, Any]:
        nid = next(self._ids)
        now = self._now()
        n = {"id": nid, "type": None, "body": body, "attachment": None, "author": self._user(user or self.BOT),
             "created_at": now, "updated_at": now, "system": system, "noteable_id": 90_000 + iid,
             "noteable_type": "MergeRequest", "project_id": self.project_id, "noteable_iid": iid, "resolvable": False,
             "confidential": False, "internal": False, "imported": False, "imported_from": "none"}
        with self.lock:
            self.notes_by_id[nid] = n
        return n

    def add_merge_request(self, iid: int, sha: str, source_branch: str, *, state: str = "opened",
                          target_branch: str = "main", source_project_id: int | None = None) -> dict[str, Any]:
        """A merge request whose head is `sha`, for the commit -> merge requests lookup."""
        now = self._now()
        mr = {"id": 70_000 + iid, "iid": iid, "project_id": self.project_id, "title": f"Change {iid}",
              "description": "", "state": state, "source_branch": source_branch, "target_branch": target_branch,
              "source_project_id": source_project_id or self.project_id, "target_project_id": self.project_id,
              "sha": sha, "web_url": f"{self.origin}/{self.project_path}/-/merge_requests/{iid}",
              "author": self._user(self.HUMAN), "created_at": now, "updated_at": now, "draft": False,
              "merge_status": "can_be_merged",
              "references": {"short": f"!{iid}", "relative": f"!{iid}", "full": f"{self.project_path}!{iid}"}}
        with self.lock:
            self.merge_requests.append(mr)
        return mr

    def seed(self, issue: int, count: int, body: str = "Unrelated review note {i}") -> None:
        for i in range(count):
            self.add_note(issue, body.format(i=i + 1), self.HUMAN, system=(i % 10 == 9))

    def comments(self, issue: int) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(n) for _, n in sorted(self.notes_by_id.items()) if n["noteable_iid"] == issue]

    notes = comments

    def bodies_seen(self) -> str:
        import json

        with self.lock:
            return "\n".join(json.dumps([r["path"], r["body"], r["headers"]]) for r in self.requests)

    # ---- replies ---------------------------------------------------------------------------------------
    def _error(self, status: int, message: Any = None) -> Reply:
        text = {400: "400 Bad request", 401: "401 Unauthorized", 403: "403 Forbidden", 404: "404 Not found"}
        return Reply(status, {"message": message if message is not None else text.get(status, f"{status} Error")})

    def _checked(self, kind: str, reply: Reply) -> Reply:
        schema = kind if reply.status < 400 else "error"
        for e in self._validators[schema].iter_errors(reply.body):
            self.violation(f"stand-in: {kind} response {reply.status} does not match the schema: {e.message[:200]}")
        return reply

    def rate_limit_message(self) -> str:
        return "Retry later"

    # ---- routing ---------------------------------------------------------------------------------------
    def route(self, req: Request, entry: dict[str, Any]) -> Reply:
        def bad(status: int, text: str, message: Any = None) -> Reply:
            self.violation(f"{req.method} {req.raw_path}: {text}")
            return self._error(status, message)

        if not req.path.startswith("/api/v4/"):
            return bad(404, "not under /api/v4", "404 Not Found")
        raw = req.path[len("/api/v4"):]
        for method, rx, op in ROUTES:
            m = rx.match(raw)
            if m and method == req.method:
                break
        else:
            self.violation(f"{req.method} {req.raw_path}: no such route in the notes/statuses API")
            return Reply(404, {"error": "404 Not Found"})
        entry["operation"] = op
        groups = [unquote(g) for g in m.groups()]
        write = req.method != "GET"

        # authentication (https://docs.gitlab.com/api/rest/authentication/)
        private = req.headers.get("private-token")
        bearer = req.headers.get("authorization", "")
        job = req.headers.get("job-token")
        token = private or (bearer[7:].strip() if bearer.lower().startswith("bearer ") else None)
        if token:
            if self.tokens is not None and token not in self.tokens and token not in self.read_only_tokens:
                return self._error(401, "401 Unauthorized")
            if write and token in self.read_only_tokens:
                return Reply(403, {"error": "insufficient_scope", "error_description": "The request requires higher "
                                   "privileges than provided by the access token.", "scope": "api"})
        elif job:
            if self.job_tokens is not None and job not in self.job_tokens:
                return self._error(401, "401 Unauthorized")
            if write:  # job tokens cannot create or edit notes or statuses
                return self._error(403, "403 Forbidden")
        else:
            return bad(401, "no PRIVATE-TOKEN, Authorization: Bearer or JOB-TOKEN header", "401 Unauthorized")

        # project and merge request
        project = groups[0]
        if not self.any_project and project not in (str(self.project_id), self.project_path):
            return self._error(404, "404 Project Not Found")
        if "/" in project and "%2F" not in req.raw_path.split("?")[0].upper():
            return bad(404, "a project path must be URL-encoded (%2F)", "404 Project Not Found")

        # parameters
        query = dict(req.query)
        params: dict[str, Any] = {}
        if req.method == "GET":
            for k, v in query.items():
                params[k] = int(v) if k in ("per_page", "page") and re.fullmatch(r"\d+", v) else v
            errs = list(self._validators[f"{op}:query"].iter_errors(params))
            if errs:
                return bad(400, f"query: {errs[0].message}", {"error": errs[0].message})
        else:
            if req.body_error:
                return bad(400, req.body_error)
            if query and op != "statuses/create":
                return bad(400, f"unexpected query parameters {sorted(query)}")
            params = {**query, **(req.body if isinstance(req.body, dict) else {})}
            errs = list(self._validators[f"{op}:body"].iter_errors(params))
            if errs:
                return bad(400, f"{op}: {errs[0].message}", {"error": errs[0].message})

        if op.startswith("notes/"):
            if not re.fullmatch(r"\d+", groups[1]):
                return bad(404, f"merge request iid {groups[1]!r} is not a number", "404 Not found")
            iid = int(groups[1])
            if self.mrs is not None and iid not in self.mrs:
                return self._checked(op, self._error(404, "404 Not found"))

        fault = self.take_fault(op)
        if fault is not None:
            reply = self.apply_fault(fault, entry, lambda s, msg: self._error(s, msg))
            if reply is not None:
                return reply
        if op == "commits/merge_requests":
            sha = groups[1]
            with self.lock:
                found = [dict(mr) for mr in self.merge_requests if mr["sha"] == sha]
            per_page, page = params.get("per_page", 20), params.get("page", 1)
            reply = self._checked("merge_requests", Reply(200, found[(page - 1) * per_page: page * per_page]))
        elif op == "notes/list":
            reply = self._checked("notes", self._list(req, iid, params))
        elif op == "notes/create":
            reply = self._create(iid, params)
        elif op == "notes/update":
            reply = self._update(iid, groups[2], params)
        else:
            reply = self._status(groups[1], params)
        entry["result_id"] = reply.body.get("id") if isinstance(reply.body, dict) else None
        return self.after_fault(fault, reply, lambda st, msg: self._error(st, msg))

    def _list(self, req: Request, iid: int, q: dict[str, Any]) -> Reply:
        items = self.comments(iid)
        key = q.get("order_by", "created_at")
        items.sort(key=lambda n: (n[key], n["id"]), reverse=q.get("sort", "desc") == "desc")
        per_page, page = q.get("per_page", 20), q.get("page", 1)
        total_pages = max(1, math.ceil(len(items) / per_page))
        chunk = items[(page - 1) * per_page: page * per_page]
        base = f"{self.origin}{req.path}"

        def link(p: int) -> str:
            return f"<{base}?{urlencode({**{k: v for k, v in req.query if k != 'page'}, 'page': p})}>"

        rels = []
        if page > 1:
            rels.append(f'{link(page - 1)}; rel="prev"')
        if page < total_pages:
            rels.append(f'{link(page + 1)}; rel="next"')
        rels += [f'{link(1)}; rel="first"', f'{link(total_pages)}; rel="last"']
        headers = {"x-page": str(page), "x-per-page": str(per_page), "x-total": str(len(items)),
                   "x-total-pages": str(total_pages), "x-next-page": str(page + 1) if page < total_pages else "",
                   "x-prev-page": str(page - 1) if page > 1 else "", "Link": ", ".join(rels)}
        return Reply(200, chunk, headers)

    def _create(self, iid: int, params: dict[str, Any]) -> Reply:
        if len(params["body"]) > NOTE_LIMIT:
            self.violation(f"notes/create: body of {len(params['body']):,} characters (GitLab's limit is 1,000,000)")
            return self._error(400, {"note": [f"is too long (maximum is {NOTE_LIMIT} characters)"]})
        return self._checked("note", Reply(201, self.add_note(iid, params["body"])))

    def _update(self, iid: int, note_id: str, params: dict[str, Any]) -> Reply:
        with self.lock:
            n = self.notes_by_id.get(int(note_id)) if note_id.isdigit() else None
            if n is None or n["noteable_iid"] != iid:
                return self._error(404, "404 Note Not Found")
            if n["author"]["id"] != self.BOT["id"] or n["system"]:
                return self._error(403, "403 Forbidden")
            if len(params["body"]) > NOTE_LIMIT:
                self.violation(f"notes/update: body of {len(params['body']):,} characters (GitLab's limit is 1,000,000)")
                return self._error(400, {"note": [f"is too long (maximum is {NOTE_LIMIT} characters)"]})
            n["body"] = params["body"]
            n["updated_at"] = self._now()
            return self._checked("note", Reply(200, dict(n)))

    def _status(self, sha: str, params: dict[str, Any]) -> Reply:
        if not re.fullmatch(r"[0-9a-f]{40}", sha):
            return self._error(404, "404 Commit Not Found")
        now = self._now()
        st = {"id": next(self._ids), "sha": sha, "ref": params.get("ref"), "status": params["state"],
              "name": params.get("name") or params.get("context") or "default", "target_url": params.get("target_url"),
              "description": params.get("description"), "created_at": now,
              "started_at": now if params["state"] != "pending" else None,
              "finished_at": now if params["state"] in ("success", "failed", "canceled", "skipped") else None,
              "allow_failure": False, "coverage": params.get("coverage"), "author": self._user(self.BOT)}
        with self.lock:
            self.statuses.append(st)
        return self._checked("status", Reply(201, st))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.gitlab_standin", description=__doc__.split("\n\n")[0])
    parser.add_argument("--token", action="append", help="accept only this PRIVATE-TOKEN (repeatable; default: any)")
    parser.add_argument("--job-token", action="append", help="accept only this JOB-TOKEN for reads (default: any)")
    parser.add_argument("--read-only-token", action="append", default=[], help="a token with read_api scope only")
    parser.add_argument("--project", type=int, default=4242, help="the numeric project id (default 4242)")
    parser.add_argument("--project-path", default="lepton/demo")
    parser.add_argument("--only-project", action="store_true", help="404 for other project ids (default: any id)")
    parser.add_argument("--mrs", default=None, help="comma-separated merge request iids that exist (default: all)")
    parser.add_argument("--seed", action="append", default=[], metavar="IID:COUNT", help="unrelated notes to start with")
    parser.add_argument("--mr-for-commit", action="append", default=[], metavar="IID:SHA:BRANCH",
                        help="an open merge request whose head is SHA on BRANCH (for the commit lookup)")

    def make(args: argparse.Namespace) -> StandIn:
        s = GitLabStandIn(project_id=args.project, project_path=args.project_path,
                          tokens=set(args.token) if args.token else None,
                          job_tokens=set(args.job_token) if args.job_token else None,
                          read_only_tokens=set(args.read_only_token), any_project=not args.only_project,
                          mrs={int(x) for x in args.mrs.split(",") if x} if args.mrs is not None else None,
                          state=args.state, host=args.host, port=args.port)
        for item in args.seed:
            iid, _, count = item.partition(":")
            s.seed(int(iid), int(count or 1))
        for item in args.mr_for_commit:
            iid, sha, branch = item.split(":", 2)
            s.add_merge_request(int(iid), sha, branch)
        return s

    return serve_main(make, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
