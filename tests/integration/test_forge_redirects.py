"""Token headers never follow a redirect to another origin, and malformed URLs or token values are one-line
ForgeErrors, never a crash.

Two real loopback HTTP servers: the "API" answers 302 or 307 with a Location on the "other" server (another
port, so another origin), and the other server records the headers it received. requests alone strips
only `Authorization` there; GitLab's PRIVATE-TOKEN used to arrive at the other host.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from lepton_ci.forge.github import GitHubAPI
from lepton_ci.forge.gitlab import GitLabAPI
from lepton_ci.forge.http import ForgeError, HttpClient

GH_TOKEN = "ghp_redirectCanary000000000000000000001"
GL_TOKEN = "glpat-redirectCanary00000001"


class Server:
    """A loopback HTTP server in a thread. `redirect_to` (a base URL) makes it answer every request with
    `status` and Location there; otherwise it answers 200/201 with a small JSON body, except that /old/...
    is redirected (301) to /new/... on the same server. Records every
    request's method, path and lower-cased headers."""

    def __init__(self, redirect_to: str | None = None, status: int = 302) -> None:
        self.redirect_to = redirect_to
        self.status = status
        self.seen: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.seen.append({"method": self.command, "path": self.path, "body": body,
                                   "headers": {k.lower(): v for k, v in self.headers.items()}})
                if outer.redirect_to is not None or self.path.startswith("/old/"):
                    self.send_response(outer.status if outer.redirect_to else 301)
                    self.send_header("Location", (outer.redirect_to or outer.url) + self.path.replace("/old/", "/new/"))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = json.dumps([] if self.command == "GET" else {"id": 1, "html_url": None}).encode()
                self.send_response(200 if self.command == "GET" else 201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = _any  # noqa: N815 - http.server's naming

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture()
def other() -> Iterator[Server]:
    with Server() as s:
        yield s


OPTIONS: dict[str, Any] = {"sleep": lambda s: None, "log": lambda s: None, "backoff_s": 0.01, "timeout_s": 5,
                           "max_retries": 0}


def _apis(base: str) -> list[tuple[Any, str, str]]:
    return [(GitHubAPI(base, "octo/repo", GH_TOKEN, **OPTIONS), "authorization", GH_TOKEN),
            (GitLabAPI(base, "4242", GL_TOKEN, **OPTIONS), "private-token", GL_TOKEN)]


@pytest.mark.parametrize("status", [302, 307])
@pytest.mark.parametrize("which", ["github", "gitlab"])
def test_token_header_is_dropped_on_a_redirect_to_another_origin(other: Server, status: int, which: str) -> None:
    with Server(redirect_to=other.url, status=status) as api_server:
        api, header, token = _apis(api_server.url)[0 if which == "github" else 1]
        assert list(api.list_comments(7)) == []  # GET, followed to the other server
        if status == 307:  # 307 repeats the POST with its body (302 would turn it into a GET)
            assert api.create_comment(7, "hello")["id"] == 1
        calls = 2 if status == 307 else 1
        assert [r["headers"].get(header) for r in api_server.seen] == [
            f"Bearer {token}" if which == "github" else token] * calls  # the API itself did get the token
    assert len(other.seen) == calls
    for request in other.seen:
        leaked = {k: v for k, v in request["headers"].items() if k in ("authorization", "private-token", "job-token")}
        assert not leaked, (status, request["method"], leaked)
        assert token not in json.dumps(request["headers"])
    if status == 307:
        assert other.seen[1]["method"] == "POST" and b"hello" in other.seen[1]["body"]


def test_job_token_header_is_dropped_too(other: Server) -> None:
    with Server(redirect_to=other.url, status=307) as api_server:
        HttpClient(api_server.url, headers={"JOB-TOKEN": "glcbt-64_redirectCanary0001"}, **OPTIONS).request("GET", "/x")
    assert "job-token" in api_server.seen[0]["headers"] and "job-token" not in other.seen[0]["headers"]


def test_same_origin_redirect_keeps_the_token() -> None:
    """A redirect within the API's own origin (GitHub's 301 for a renamed repository) keeps working."""
    with Server() as api_server:
        client = HttpClient(api_server.url, headers={"PRIVATE-TOKEN": GL_TOKEN}, **OPTIONS)
        assert client.request("GET", "/old/x").status == 200
        session = client.session
        assert session.should_strip_auth("https://gitlab.example/api", "http://gitlab.example/api")  # downgrade
        assert session.should_strip_auth("https://gitlab.example/api", "https://gitlab.example:8443/api")
        assert session.should_strip_auth("https://gitlab.example/api", "https://evil.example/api")
    assert [(r["path"], r["headers"].get("private-token")) for r in api_server.seen] == [
        ("/old/x", GL_TOKEN), ("/new/x", GL_TOKEN)]


@pytest.mark.parametrize(("url", "needle"), [
    ("htp://x", "must start with http:// or https://, not htp://"),
    ("http://[::1", "cannot be parsed"),
    ("x", "must start with http:// or https://"),
    ("http://", "no host name"),
    ("http://api.example:99999", "cannot be parsed"),
    ("http://api .example", "spaces or control characters"),
])
def test_malformed_api_url_is_a_forge_error(url: str, needle: str) -> None:
    for api, _, _ in _apis(url):
        with pytest.raises(ForgeError) as info:
            list(api.list_comments(7))
        assert needle in str(info.value) and "\n" not in str(info.value)
        assert info.value.exit_code == 2


@pytest.mark.parametrize("token", [f"{GH_TOKEN}\nX-Evil: 1", f"{GH_TOKEN}\r\n", f"{GH_TOKEN}\x00"])
def test_token_that_is_not_a_header_value_is_a_forge_error_without_the_token(other: Server, token: str) -> None:
    for api in (GitHubAPI(other.url, "octo/repo", token, **OPTIONS), GitLabAPI(other.url, "4242", token, **OPTIONS)):
        with pytest.raises(ForgeError) as info:
            api.create_comment(7, "x")
        text = str(info.value)
        assert "not a valid HTTP header value" in text and "\n" not in text
        assert GH_TOKEN not in text and "X-Evil" not in text
    assert other.seen == []  # nothing was sent
