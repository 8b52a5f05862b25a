"""A GitHub REST API stand-in that holds every request and response to GitHub's published contract.

The contract is @octokit/openapi's `generated/api.github.com.json` (OpenAPI 3.0.3; scripts/deps/10-octokit.sh
installs it and exports LEPTON_OCTOKIT_SPEC). Each request is matched to an operation by method and path
template over the whole description; path and query parameters and the JSON body are validated against
the operation's schemas (OpenAPI 3.0 converted to JSON Schema draft 4: `$ref` into components, `nullable`,
OpenAPI-only keywords dropped, formats not asserted). Every response the stand-in sends is validated
against the operation's response schema too. Anything wrong is answered like GitHub would (401, 404, 422)
and recorded in `violations`, so a test that calls `assert_clean()` fails.

Implemented operations: issues/list-comments, issues/create-comment, issues/update-comment,
repos/create-commit-status, checks/create. On top of the OpenAPI description, the stand-in enforces
what GitHub documents in prose: per_page at most 100, comment bodies at most 65,536 characters, a fork
pull request's GITHUB_TOKEN cannot write ("Resource not accessible by integration").

Pagination is GitHub's: `Link` headers with absolute URLs and rel="next"/"last"/"prev"/"first", which
(like GitHub) use the `/repositories/{id}/...` form, so a client must follow them verbatim.

    with GitHubStandIn(spec_path, repo="octo/repo") as gh:
        gh.seed(7, 250)                       # 250 unrelated comments on PR #7
        api = GitHubAPI(gh.url, "octo/repo", "ghp_x")

CLI (for act workflows): python -m tests.support.github_standin --port P --state FILE [--token T]
[--repo owner/name] [--prefix /api/v3] [--prs 7,8] [--seed 7:250] [--fault OP=SPEC]...
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode

from tests.support import Reply, Request, StandIn, serve_main

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SPEC = ROOT / ".cache" / "node" / "octokit" / "node_modules" / "@octokit" / "openapi" / "generated" / "api.github.com.json"
IMPLEMENTED = ("issues/list-comments", "issues/create-comment", "issues/update-comment",
               "repos/create-commit-status", "checks/create", "repos/list-pull-requests-associated-with-commit")
COMMENT_LIMIT = 65_536
DOCS = "https://docs.github.com/rest"
OPENAPI_ONLY = {"nullable", "example", "examples", "discriminator", "xml", "externalDocs", "deprecated",
                "readOnly", "writeOnly", "description"}


def spec_path() -> Path:
    return Path(os.environ.get("LEPTON_OCTOKIT_SPEC") or DEFAULT_SPEC)


def require_spec() -> Path:
    """The spec for a test: skip when it is not installed, but fail under scripts/test (which installs it)
    or CI=true, where a missing component is a defect."""
    import pytest

    path = spec_path()
    if not path.is_file():
        msg = f"GitHub's OpenAPI description is missing at {path}: scripts/test installs it (scripts/deps/10-octokit.sh)"
        if os.environ.get("LEPTON_OCTOKIT_SPEC") or os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


# ---- OpenAPI 3.0 → JSON Schema ---------------------------------------------------------------------------

def convert(node: Any) -> Any:
    """One OpenAPI 3.0 schema object as JSON Schema (draft 4 semantics, which OpenAPI 3.0 extends)."""
    if isinstance(node, list):
        return [convert(x) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:  # siblings of $ref are ignored in OpenAPI 3.0
        return {"$ref": "#/definitions/" + node["$ref"].rsplit("/", 1)[-1]}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in OPENAPI_ONLY or key.startswith("x-"):
            continue
        if key == "properties":
            out[key] = {name: convert(sub) for name, sub in value.items()}
        else:
            out[key] = convert(value)
    if node.get("nullable") is True:
        return {"anyOf": [{"type": "null"}, out]}
    return out


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            found.add(ref.rsplit("/", 1)[-1])
        for v in node.values():
            _refs(v, found)
    elif isinstance(node, list):
        for v in node:
            _refs(v, found)


@dataclass
class Operation:
    op_id: str
    method: str
    template: str
    regex: re.Pattern[str]
    names: list[str]
    params: list[dict[str, Any]]
    raw: dict[str, Any]


class OpenAPI:
    """GitHub's description, loaded and converted once per process (the file is 13 MB)."""

    _cache: dict[str, "OpenAPI"] = {}
    _lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path | None = None) -> "OpenAPI":
        path = Path(path or spec_path()).resolve()
        with cls._lock:
            if str(path) not in cls._cache:
                if not path.is_file():
                    raise FileNotFoundError(f"GitHub OpenAPI description not found at {path}: run scripts/test "
                                            "(scripts/deps/10-octokit.sh installs @octokit/openapi) or set LEPTON_OCTOKIT_SPEC")
                cls._cache[str(path)] = cls(json.loads(path.read_text(encoding="utf-8")))
            return cls._cache[str(path)]

    def __init__(self, spec: dict[str, Any]) -> None:
        import jsonschema

        self.spec = spec
        self.version = spec.get("info", {}).get("version")
        comps = spec["components"]
        self.operations: list[Operation] = []
        for template, item in spec["paths"].items():
            shared = item.get("parameters", [])
            for method, op in item.items():
                if method not in ("get", "post", "put", "patch", "delete"):
                    continue
                params = [self._param(p) for p in [*shared, *op.get("parameters", [])]]
                multi = {p["name"] for p in params if p.get("in") == "path" and p.get("x-multi-segment")}
                names: list[str] = []

                def group(m: re.Match[str]) -> str:
                    names.append(m.group(1))
                    return "(.+)" if m.group(1) in multi else "([^/]+)"

                pattern = re.sub(r"\\\{([^}]+)\\\}", group, re.escape(template))
                self.operations.append(Operation(op.get("operationId", f"{method} {template}"), method.upper(), template,
                                                 re.compile(f"^{pattern}$"), names, params, op))
        # literal segments win over parameters: fewer parameters first
        self.operations.sort(key=lambda o: (len(o.names), -len(o.template)))
        self.by_id = {o.op_id: o for o in self.operations}
        # The converted schemas the implemented operations need, their $ref closure as `definitions`.
        roots: list[Any] = []
        for op_id in IMPLEMENTED:
            op = self.by_id[op_id]
            roots.append(self.request_schema(op, raw=True))
            roots += [self._response_raw(op, status) for status in op.raw.get("responses", {})]
            roots += [p.get("schema") for p in op.params]
        roots += [comps["schemas"]["basic-error"], comps["schemas"]["validation-error"]]
        converted_roots = [convert(r) for r in roots if r is not None]
        names: set[str] = set()
        for r in converted_roots:
            _refs(r, names)
        defs: dict[str, Any] = {}
        todo = list(names)
        while todo:
            name = todo.pop()
            if name in defs:
                continue
            defs[name] = convert(comps["schemas"][name])
            more: set[str] = set()
            _refs(defs[name], more)
            todo += [m for m in more if m not in defs]
        self.definitions = defs
        self._validators: dict[str, Any] = {}
        self._jsonschema = jsonschema

    def _param(self, p: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in p:
            return self.spec["components"]["parameters"][p["$ref"].rsplit("/", 1)[-1]]
        return p

    def match(self, method: str, path: str) -> tuple[Operation | None, dict[str, str], bool]:
        """(operation, path params, path exists with another method)."""
        other = False
        for op in self.operations:
            m = op.regex.match(path)
            if m:
                if op.method == method:
                    return op, {n: unquote(v) for n, v in zip(op.names, m.groups())}, True
                other = True
        return None, {}, other

    def request_schema(self, op: Operation, raw: bool = False) -> Any:
        body = op.raw.get("requestBody")
        if not body:
            return None
        if "$ref" in body:
            body = self.spec["components"]["requestBodies"][body["$ref"].rsplit("/", 1)[-1]]
        return body.get("content", {}).get("application/json", {}).get("schema")

    def _response_raw(self, op: Operation, status: int | str) -> Any:
        resp = op.raw.get("responses", {}).get(str(status))
        if resp is None:
            return None
        if "$ref" in resp:
            resp = self.spec["components"]["responses"][resp["$ref"].rsplit("/", 1)[-1]]
        return resp.get("content", {}).get("application/json", {}).get("schema")

    def validator(self, key: str, schema: Any) -> Any:
        v = self._validators.get(key)
        if v is None:
            root = {**convert(schema), "definitions": self.definitions}
            self._jsonschema.Draft4Validator.check_schema(root)
            v = self._validators[key] = self._jsonschema.Draft4Validator(root)
        return v

    def errors(self, key: str, schema: Any, instance: Any) -> list[str]:
        v = self.validator(key, schema)
        return [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message[:300]}"
                for e in sorted(v.iter_errors(instance), key=lambda e: list(e.absolute_path))][:5]


# ---- the stand-in ----------------------------------------------------------------------------------------

def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class GitHubStandIn(StandIn):
    """GitHub's REST API for one repository, for the operations lepton-ci uses."""

    name = "GitHub stand-in"
    BOT = {"login": "github-actions[bot]", "id": 41898282, "type": "Bot"}
    HUMAN = {"login": "octocat", "id": 583231, "type": "User"}

    def __init__(self, spec: str | Path | None = None, *, repo: str = "octo/repo", tokens: set[str] | None = None,
                 read_only_tokens: set[str] | None = None, prs: set[int] | None = None, prefix: str = "",
                 link_style: str = "repositories", **kw: Any) -> None:
        super().__init__(**kw)
        self.api = OpenAPI.load(spec)
        self.repo = repo
        self.repo_id = 1296269
        self.tokens = tokens  # None: any non-empty token is accepted
        self.read_only_tokens = set(read_only_tokens or ())
        self.prs = prs  # None: every issue number exists
        self.prefix = prefix.rstrip("/")
        self.link_style = link_style
        self.comments_by_id: dict[int, dict[str, Any]] = {}
        self.statuses: list[dict[str, Any]] = []
        self.check_runs: list[dict[str, Any]] = []
        self.pulls: list[dict[str, Any]] = []  # add_pull(): what the commit -> pull requests lookup answers
        self._ids = itertools.count(2_000_000_001)
        self._clock = datetime(2025, 1, 1, tzinfo=timezone.utc)

    @property
    def url(self) -> str:
        return self.origin + self.prefix

    # ---- state helpers for tests -----------------------------------------------------------------------
    def _now(self) -> str:
        with self.lock:
            self._clock += timedelta(seconds=1)
            return _iso(self._clock)

    def _user(self, who: dict[str, Any]) -> dict[str, Any]:
        base = f"{self.url}/users/{who['login']}"
        web = f"{self.origin}/{who['login']}"
        return {"login": who["login"], "id": who["id"], "node_id": f"MDQ6VXNlcj{who['id']}", "name": None, "email": None,
                "avatar_url": f"https://avatars.githubusercontent.com/u/{who['id']}?v=4", "gravatar_id": "", "url": base,
                "html_url": web, "followers_url": f"{base}/followers", "following_url": f"{base}/following{{/other_user}}",
                "gists_url": f"{base}/gists{{/gist_id}}", "starred_url": f"{base}/starred{{/owner}}{{/repo}}",
                "subscriptions_url": f"{base}/subscriptions", "organizations_url": f"{base}/orgs",
                "repos_url": f"{base}/repos", "events_url": f"{base}/events{{/privacy}}",
                "received_events_url": f"{base}/received_events", "type": who["type"], "site_admin": False,
                "user_view_type": "public"}

    def add_comment(self, issue: int, body: str, user: dict[str, Any] | None = None) -> dict[str, Any]:
        cid = next(self._ids)
        now = self._now()
        who = user or self.BOT
        c = {"id": cid, "node_id": f"IC_kwDOABCD{cid}", "url": f"{self.url}/repos/{self.repo}/issues/comments/{cid}",
             "html_url": f"{self.origin}/{self.repo}/pull/{issue}#issuecomment-{cid}", "body": body,
             "user": self._user(who), "created_at": now, "updated_at": now,
             "issue_url": f"{self.url}/repos/{self.repo}/issues/{issue}",
             "author_association": "NONE" if who["type"] == "Bot" else "MEMBER", "performed_via_github_app": None,
             "reactions": {"url": f"{self.url}/repos/{self.repo}/issues/comments/{cid}/reactions", "total_count": 0,
                           "+1": 0, "-1": 0, "laugh": 0, "confused": 0, "heart": 0, "hooray": 0, "eyes": 0, "rocket": 0}}
        with self.lock:
            self.comments_by_id[cid] = {"issue": issue, "comment": c}
        return c

    def add_pull(self, number: int, head_sha: str, head_ref: str, *, state: str = "open", base_ref: str = "main",
                 head_repo: str | None = None) -> dict[str, Any]:
        """A pull request the commit lookup finds: GitHub's own example item from the spec, with this pull
        request's number, state, branches and repositories put in (so it stays a valid pull-request-simple)."""
        pr = json.loads(json.dumps(self.api.spec["components"]["examples"]["pull-request-simple-items"]["value"][0]))
        pr["number"], pr["state"], pr["id"] = number, state, next(self._ids)
        pr["requested_teams"] = []  # GitHub's example team lacks `type`, which its own schema requires
        pr["head"]["sha"], pr["head"]["ref"], pr["base"]["ref"] = head_sha, head_ref, base_ref
        pr["head"]["label"], pr["base"]["label"] = f"{self.repo.split('/')[0]}:{head_ref}", f"octo:{base_ref}"
        pr["head"]["repo"]["full_name"] = head_repo or self.repo
        pr["base"]["repo"]["full_name"] = self.repo
        pr["html_url"] = f"{self.origin}/{self.repo}/pull/{number}"
        pr["url"] = f"{self.url}/repos/{self.repo}/pulls/{number}"
        with self.lock:
            self.pulls.append(pr)
        return pr

    def seed(self, issue: int, count: int, body: str = "Unrelated review comment {i}") -> None:
        for i in range(count):
            self.add_comment(issue, body.format(i=i + 1), self.HUMAN)

    def comments(self, issue: int) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(v["comment"]) for _, v in sorted(self.comments_by_id.items()) if v["issue"] == issue]

    def bodies_seen(self) -> str:
        """Everything clients sent in request bodies and paths, as one string (for canary checks)."""
        with self.lock:
            return "\n".join(json.dumps([r["path"], r["body"], r["headers"]]) for r in self.requests)

    # ---- replies ---------------------------------------------------------------------------------------
    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"x-github-api-version-selected": "2022-11-28", "x-ratelimit-limit": "5000",
             "x-ratelimit-remaining": "4999", "x-ratelimit-used": "1", "x-ratelimit-resource": "core",
             "x-github-media-type": "github.v3; format=json", "x-github-request-id": f"STANDIN:{next(self._ids):X}"}
        h.update(extra or {})
        return h

    def _error(self, status: int, message: str, doc: str = DOCS, errors: list[dict[str, Any]] | None = None) -> Reply:
        body: dict[str, Any] = {"message": message, "documentation_url": doc, "status": str(status)}
        if errors is not None:
            body["errors"] = errors
        return Reply(status, body, self._headers())

    def rate_limit_message(self) -> str:
        return ("API rate limit exceeded for installation ID 1. If you reach out to GitHub Support for help, please "
                "include the request ID STANDIN.")

    def secondary_message(self) -> str:
        return ("You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you "
                "reach out to GitHub Support for help, please include the request ID STANDIN.")

    def _checked(self, op: Any, reply: Reply) -> Reply:
        """Validate our own response against the operation's response schema (a stand-in bug is a violation)."""
        if op is None:
            return reply
        schema = self.api._response_raw(op, reply.status)
        if schema is None:
            if reply.status >= 400:  # undeclared error statuses still have GitHub's error shape
                schema = self.api.spec["components"]["schemas"]["basic-error"]
            else:
                self.violation(f"stand-in: {op.op_id} declares no {reply.status} response")
                return reply
        for err in self.api.errors(f"{op.op_id}:{reply.status}", schema, reply.body):
            self.violation(f"stand-in: {op.op_id} response {reply.status} does not match the schema: {err}")
        return reply

    # ---- routing ---------------------------------------------------------------------------------------
    def route(self, req: Request, entry: dict[str, Any]) -> Reply:
        def bad(status: int, text: str, message: str | None = None, **kw: Any) -> Reply:
            self.violation(f"{req.method} {req.raw_path}: {text}")
            return self._error(status, message or text, **kw)

        path = req.path
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                return bad(404, f"not under the API prefix {self.prefix}", "Not Found")
            path = path[len(self.prefix):]
        m = re.match(r"^/repositories/(\d+)(/.*)$", path)
        if m:  # GitHub's Link headers use /repositories/{id}/...: same operations as /repos/{owner}/{repo}/...
            if int(m.group(1)) != self.repo_id:
                return self._error(404, "Not Found")
            path = f"/repos/{self.repo}{m.group(2)}"
        op, params, exists = self.api.match(req.method, path)
        if op is None:
            return bad(404, "no such operation in GitHub's REST API" + (" for this method" if exists else ""), "Not Found")
        entry["operation"] = op.op_id
        if op.op_id not in IMPLEMENTED:
            return bad(404, f"operation {op.op_id} is not one lepton-ci should call", "Not Found")

        # authentication
        auth = req.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if not auth:
            return bad(401, "no Authorization header", "Requires authentication")
        if scheme.lower() not in ("bearer", "token") or not token.strip():
            return bad(401, f"Authorization scheme {scheme!r} is neither 'Bearer' nor 'token'", "Bad credentials")
        token = token.strip()
        if self.tokens is not None and token not in self.tokens and token not in self.read_only_tokens:
            return self._checked(op, self._error(401, "Bad credentials"))
        version = req.headers.get("x-github-api-version")
        if version is not None and version not in ("2022-11-28", "2026-03-10"):
            return bad(400, f"unsupported X-GitHub-Api-Version {version!r}", f"Unsupported API version {version}")

        # parameters
        query = dict(req.query)
        if len(query) != len(req.query):
            return bad(422, "a query parameter is repeated")
        declared = {p["name"]: p for p in op.params}
        for name, value in list(params.items()) + list(query.items()):
            p = declared.get(name)
            where = "path" if name in params else "query"
            if p is None or p.get("in") != where:
                return bad(422, f"unknown {where} parameter {name!r} for {op.op_id}")
            coerced = _coerce(value, p.get("schema", {}))
            errs = self.api.errors(f"{op.op_id}:param:{name}", p.get("schema", {}), coerced)
            if errs:
                return bad(422 if where == "query" else 404, f"{where} parameter {name}={value!r}: {errs[0]}")
            (params if where == "path" else query)[name] = coerced
        for p in op.params:
            if p.get("required") and p["name"] not in params and p["name"] not in query:
                return bad(422, f"missing required {p['in']} parameter {p['name']}")
        if "per_page" in query and not 1 <= query["per_page"] <= 100:
            return bad(422, f"per_page={query['per_page']} (GitHub allows 1 to 100)")
        if "page" in query and query["page"] < 1:
            return bad(422, f"page={query['page']}")

        # body
        schema = self.api.request_schema(op)
        if req.method in ("POST", "PATCH", "PUT"):
            if req.body_error or req.body is None:
                return bad(400, req.body_error or "no JSON body", "Problems parsing JSON")
            if "json" not in req.headers.get("content-type", ""):
                return bad(415, "body is not sent as application/json")
            errs = self.api.errors(f"{op.op_id}:request", schema, req.body) if schema else []
            if errs:
                return bad(422, f"body does not match {op.op_id}'s schema: {errs[0]}", "Invalid request.\n\n" + errs[0],
                           errors=[{"code": "invalid", "message": e} for e in errs])
            props = (schema or {}).get("properties", {})
            extra = sorted(set(req.body) - set(props)) if isinstance(req.body, dict) else []
            if extra:  # GitHub ignores unknown fields; a client sending them has a bug (a typo)
                return bad(422, f"body has fields {op.op_id} does not define: {', '.join(extra)}")
        elif req.raw_body:
            return bad(400, f"{req.method} with a body")

        owner_repo = f"{params.get('owner')}/{params.get('repo')}"
        if owner_repo.lower() != self.repo.lower():
            return self._checked(op, self._error(404, "Not Found"))

        fault = self.take_fault(op.op_id)
        if fault is not None:
            reply = self.apply_fault(fault, entry, lambda s, msg: self._error(s, msg))
            if reply is not None:
                return self._checked(op, reply)
        if req.method != "GET" and token in self.read_only_tokens:
            return self._checked(op, self._error(403, "Resource not accessible by integration"))
        reply = getattr(self, "op_" + op.op_id.replace("/", "_").replace("-", "_"))(req, params, query)
        entry["result_id"] = reply.body.get("id") if isinstance(reply.body, dict) else None
        return self._checked(op, self.after_fault(fault, self._checked(op, reply), lambda st, msg: self._error(st, msg)))

    # ---- operations ------------------------------------------------------------------------------------
    def _issue_exists(self, number: int) -> bool:
        return self.prs is None or number in self.prs

    def op_issues_list_comments(self, req: Request, params: dict[str, Any], query: dict[str, Any]) -> Reply:
        number = params["issue_number"]
        if not self._issue_exists(number):
            return self._error(404, "Not Found", f"{DOCS}/issues/comments#list-issue-comments")
        items = self.comments(number)
        if "since" in query:
            items = [c for c in items if c["updated_at"] >= query["since"]]
        per_page, page = query.get("per_page", 30), query.get("page", 1)
        last = max(1, math.ceil(len(items) / per_page))
        chunk = items[(page - 1) * per_page: page * per_page]
        base = (f"{self.url}/repositories/{self.repo_id}/issues/{number}/comments" if self.link_style == "repositories"
                else f"{self.url}/repos/{self.repo}/issues/{number}/comments")

        def link(p: int) -> str:
            q = {k: v for k, v in req.query if k != "page"}
            return f"<{base}?{urlencode({**q, 'page': p})}>"

        rels = []
        if page > 1:
            rels.append(f'{link(min(page - 1, last))}; rel="prev"')
        if page < last:
            rels += [f'{link(page + 1)}; rel="next"', f'{link(last)}; rel="last"']
        if page > 1:
            rels.append(f'{link(1)}; rel="first"')
        headers = self._headers({"Link": ", ".join(rels)} if rels else None)
        return Reply(200, chunk, headers)

    def op_issues_create_comment(self, req: Request, params: dict[str, Any], query: dict[str, Any]) -> Reply:
        number = params["issue_number"]
        if not self._issue_exists(number):
            return self._error(404, "Not Found", f"{DOCS}/issues/comments#create-an-issue-comment")
        body = req.body["body"]
        if len(body) > COMMENT_LIMIT:
            self.violation(f"{req.method} {req.raw_path}: comment body of {len(body):,} characters (GitHub's limit is 65,536)")
            return self._error(422, "Validation Failed", f"{DOCS}/issues/comments#create-an-issue-comment",
                               errors=[{"resource": "IssueComment", "code": "unprocessable", "field": "data",
                                        "message": f"Body is too long (maximum is {COMMENT_LIMIT} characters)"}])
        c = self.add_comment(number, body)
        return Reply(201, c, self._headers({"Location": c["url"]}))

    def op_issues_update_comment(self, req: Request, params: dict[str, Any], query: dict[str, Any]) -> Reply:
        with self.lock:
            held = self.comments_by_id.get(params["comment_id"])
        if held is None:
            return self._error(404, "Not Found", f"{DOCS}/issues/comments#update-an-issue-comment")
        body = req.body["body"]
        if len(body) > COMMENT_LIMIT:
            self.violation(f"{req.method} {req.raw_path}: comment body of {len(body):,} characters (GitHub's limit is 65,536)")
            return self._error(422, "Validation Failed", f"{DOCS}/issues/comments#update-an-issue-comment",
                               errors=[{"resource": "IssueComment", "code": "unprocessable", "field": "data",
                                        "message": f"Body is too long (maximum is {COMMENT_LIMIT} characters)"}])
        with self.lock:
            held["comment"]["body"] = body
            held["comment"]["updated_at"] = self._now()
            return Reply(200, dict(held["comment"]), self._headers())

    def op_repos_list_pull_requests_associated_with_commit(self, req: Request, params: dict[str, Any],
                                                          query: dict[str, Any]) -> Reply:
        sha = params["commit_sha"]
        with self.lock:
            found = [dict(p) for p in self.pulls if p["head"]["sha"] == sha]
        per_page, page = query.get("per_page", 30), query.get("page", 1)
        return Reply(200, found[(page - 1) * per_page: page * per_page], self._headers())

    def op_repos_create_commit_status(self, req: Request, params: dict[str, Any], query: dict[str, Any]) -> Reply:
        sha = params["sha"]
        if not re.fullmatch(r"[0-9a-f]{40}", sha):
            return self._error(422, "No commit found for SHA: " + sha, f"{DOCS}/commits/statuses#create-a-commit-status")
        b = req.body
        if len(b.get("description") or "") > 140:
            self.violation(f"{req.method} {req.raw_path}: status description longer than 140 characters")
        now = self._now()
        sid = next(self._ids)
        st = {"url": f"{self.url}/repos/{self.repo}/statuses/{sha}", "avatar_url": None, "id": sid,
              "node_id": f"SC_kwDO{sid}", "state": b["state"], "description": b.get("description"),
              "target_url": b.get("target_url"), "context": b.get("context", "default"), "created_at": now,
              "updated_at": now, "creator": self._user(self.BOT)}
        with self.lock:
            self.statuses.append({"sha": sha, **st})
        return Reply(201, st, self._headers({"Location": st["url"]}))

    def op_checks_create(self, req: Request, params: dict[str, Any], query: dict[str, Any]) -> Reply:
        b = req.body
        if (b.get("status") == "completed" or b.get("completed_at")) and not b.get("conclusion"):
            return self._error(422, "Invalid request.\n\nNo subschema in \"anyOf\" matched.",
                               f"{DOCS}/checks/runs#create-a-check-run")
        cid = next(self._ids)
        now = self._now()
        conclusion = b.get("conclusion")
        out = b.get("output") or {}
        app_owner = self._user({"login": "github", "id": 9919, "type": "Organization"})
        run = {"id": cid, "node_id": f"CR_kwDO{cid}", "head_sha": b["head_sha"], "name": b["name"],
               "url": f"{self.url}/repos/{self.repo}/check-runs/{cid}",
               "html_url": f"{self.origin}/{self.repo}/runs/{cid}", "details_url": b.get("details_url"),
               "external_id": b.get("external_id", ""), "status": "completed" if conclusion else b.get("status", "queued"),
               "conclusion": conclusion, "started_at": b.get("started_at", now),
               "completed_at": b.get("completed_at", now) if conclusion else None,
               "output": {"title": out.get("title"), "summary": out.get("summary"), "text": out.get("text"),
                          "annotations_count": len(out.get("annotations") or []),
                          "annotations_url": f"{self.url}/repos/{self.repo}/check-runs/{cid}/annotations"},
               "check_suite": {"id": 5}, "pull_requests": [],
               "app": {"id": 15368, "slug": "github-actions", "node_id": "MDM6QXBwMTUzNjg", "owner": app_owner,
                       "name": "GitHub Actions", "description": "Automate your workflow", "external_url": "https://help.github.com/en/actions",
                       "html_url": "https://github.com/apps/github-actions", "created_at": "2018-07-30T09:30:17Z",
                       "updated_at": "2024-04-10T20:33:16Z", "permissions": {"checks": "write", "metadata": "read"},
                       "events": ["check_run"]}}
        with self.lock:
            self.check_runs.append(run)
        return Reply(201, run, self._headers({"Location": run["url"]}))


def _coerce(value: str, schema: dict[str, Any]) -> Any:
    """Path and query values are strings; convert to the schema's type when they look like it."""
    kind = schema.get("type")
    if kind == "integer" and re.fullmatch(r"-?\d+", value):
        return int(value)
    if kind == "number":
        try:
            return float(value)
        except ValueError:
            return value
    if kind == "boolean" and value in ("true", "false"):
        return value == "true"
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.github_standin", description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default=None, help="api.github.com.json (default: $LEPTON_OCTOKIT_SPEC or .cache/node/octokit)")
    parser.add_argument("--repo", default="octo/repo", help="owner/name the stand-in serves (default: octo/repo)")
    parser.add_argument("--token", action="append", help="accept only this token (repeatable; default: any)")
    parser.add_argument("--read-only-token", action="append", default=[], help="a token that can read but not write")
    parser.add_argument("--prefix", default="", help="API path prefix, e.g. /api/v3 for GitHub Enterprise Server")
    parser.add_argument("--prs", default=None, help="comma-separated pull request numbers that exist (default: all)")
    parser.add_argument("--seed", action="append", default=[], metavar="ISSUE:COUNT", help="unrelated comments to start with")
    parser.add_argument("--pull-for-commit", action="append", default=[], metavar="NUMBER:SHA:BRANCH",
                        help="an open pull request whose head is SHA on BRANCH (for the commit lookup)")

    def make(args: argparse.Namespace) -> StandIn:
        s = GitHubStandIn(args.spec, repo=args.repo, tokens=set(args.token) if args.token else None,
                          read_only_tokens=set(args.read_only_token), prefix=args.prefix, state=args.state,
                          host=args.host, port=args.port,
                          prs={int(x) for x in args.prs.split(",") if x} if args.prs is not None else None)
        for item in args.seed:
            issue, _, count = item.partition(":")
            s.seed(int(issue), int(count or 1))
        for item in args.pull_for_commit:
            number, sha, branch = item.split(":", 2)
            s.add_pull(int(number), sha, branch)
        return s

    return serve_main(make, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
