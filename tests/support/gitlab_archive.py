"""A loopback stand-in for GitLab's repository archive endpoint, serving `git archive` of a real repository.

    GET /api/v4/projects/:id/repository/archive[.tar.gz]?sha=REF
    (https://docs.gitlab.com/api/repositories/#get-file-archive)

`:id` is the project's numeric id or its URL-encoded path (`lepton%2Fci-templates`); `sha` is a commit, tag
or branch (default: the default branch). The reply is what GitLab sends: a gzipped tar whose single top
directory is `<project name>-<ref>-<commit>/`, with a `Content-Disposition` file name. Unknown projects and
refs are 404 with GitLab's `{"message": ...}` body; anything else is 404 too and counts as a violation.
Every request is appended to the log file as one JSON line (method, path, query, status).

`publish(checkout, dest, tag)` builds the repository the way the components project is published: the
lepton-ci source (what `git ls-files` lists in the checkout, uncommitted edits included) with the contents
of gitlab-templates/ at its root (templates/ where GitLab's CI/CD catalog wants it), committed and tagged.

CLI: python -m tests.support.gitlab_archive --port 0 --repo DIR --project lepton/ci-templates --log FILE
(prints the base URL, `http://127.0.0.1:PORT/api/v4`, once it listens; serves until killed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROUTE = re.compile(r"^/api/v4/projects/([^/]+)/repository/archive(\.tar\.gz)?$")
GIT = ["git", "-c", "user.name=Release", "-c", "user.email=release@example.com", "-c", "init.defaultBranch=main"]


def _git(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run([*GIT, *args], cwd=repo, input=stdin, capture_output=True, check=True, timeout=120).stdout


def publish(checkout: Path, dest: Path, tag: str) -> str:
    """The published components project as a git repository at `dest`; returns the tagged commit."""
    listed = _git(checkout, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split(b"\0")
    dest.mkdir(parents=True)
    for raw in listed:
        rel = raw.decode()
        src = checkout / rel
        if not rel or not src.is_file() or rel.startswith(("gitlab-templates/", ".github/")):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    shutil.copytree(checkout / "gitlab-templates", dest, dirs_exist_ok=True)
    _git(dest, "init", "-q")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", f"lepton-ci {tag}")
    _git(dest, "tag", tag)
    return _git(dest, "rev-parse", "HEAD").decode().strip()


class ArchiveServer:
    def __init__(self, repo: Path, project: str, log: Path, project_id: str = "", port: int = 0) -> None:
        self.repo, self.project, self.log, self.project_id = repo, project, log, project_id
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.handle(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/api/v4"

    def _record(self, path: str, query: dict[str, str], status: int, violation: str = "") -> None:
        with self.lock, open(self.log, "a") as f:
            f.write(
                json.dumps({"method": "GET", "path": path, "query": query, "status": status, "violation": violation})
                + "\n"
            )

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        parsed = urllib.parse.urlsplit(h.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))

        def reply(status: int, body: bytes, headers: dict[str, str], violation: str = "") -> None:
            self._record(parsed.path, query, status, violation)
            h.send_response(status)
            for k, v in {**headers, "Content-Length": str(len(body))}.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(body)

        def not_found(message: str, violation: str = "") -> None:
            reply(404, json.dumps({"message": message}).encode(), {"Content-Type": "application/json"}, violation)

        m = ROUTE.match(parsed.path)
        if not m:
            return not_found("404 Not Found", f"no such route: GET {parsed.path}")
        project = urllib.parse.unquote(m.group(1))
        if project not in {self.project, self.project_id}:
            return not_found("404 Project Not Found")
        if set(query) - {"sha", "format", "path", "include_lfs_blobs", "exclude"}:
            return not_found("404 Not Found", f"unknown parameters {sorted(query)}")
        ref = query.get("sha") or "HEAD"
        try:
            sha = _git(self.repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").decode().strip()
        except subprocess.CalledProcessError:
            return not_found("404 Commit Not Found")
        name = self.project.rsplit("/", 1)[-1]
        prefix = f"{name}-{ref.replace('/', '-')}-{sha}"
        data = _git(self.repo, "archive", "--format=tar.gz", f"--prefix={prefix}/", sha)
        reply(
            200,
            data,
            {
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f'attachment; filename="{prefix}.tar.gz"',
            },
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.gitlab_archive", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--port", type=int, default=0, help="loopback port (0: a free one)")
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--project", required=True, help="project path, e.g. lepton/ci-templates")
    parser.add_argument("--project-id", default="", help="numeric id that also names the project")
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args(argv)
    server = ArchiveServer(args.repo, args.project, args.log, args.project_id, args.port)
    print(server.url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.httpd.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
