"""HTTP for forge APIs: retries with backoff, rate-limit waits, timeouts, and tokens masked everywhere.

Retried: connection errors and resets, timeouts, 5xx, 429, and GitHub's rate limits (403/429 with
`x-ratelimit-remaining: 0`, or a "secondary rate limit" message). Waits honour `Retry-After` (seconds or
an HTTP date) and `x-ratelimit-reset`; a wait longer than `max_wait_s` is not slept through but reported.

A request that is not idempotent (creating a comment) is retried blindly only when the server cannot have
acted on it (the connection was refused, or the API answered 429 / a rate limit). When it may have acted
(a reset or timeout after the request was sent, a 5xx) the client raises `AmbiguousWrite`, and the caller
looks before it tries again (see `publish.post_sticky`), so a retry never posts a second comment.

Nothing that leaves this module (exceptions, log lines) can contain a registered secret, and no token
header follows a redirect to another origin (see `session.NoLeakSession`). Every failure of a request,
including a malformed API URL or a token that is not a valid header value, is a one-line `ForgeError`. Defaults can be
tuned with LEPTON_CI_HTTP_RETRIES, LEPTON_CI_HTTP_BACKOFF (seconds), LEPTON_CI_HTTP_TIMEOUT (seconds) and
LEPTON_CI_HTTP_MAX_WAIT (seconds); `--debug` (or LEPTON_CI_DEBUG=1) logs every request, masked.

This module imports nothing heavy at module level (requests loads on the first request): the CLI entry
point imports it to mask its error messages, and `lepton-ci --help` must stay light.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from lepton_ci.errors import UserError

_SECRETS: set[str] = set()
SECRET_HEADERS = ("authorization", "private-token", "job-token")
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"})


def register_secret(value: str | None) -> None:
    """Remember a secret so `mask` removes it; short values are ignored to avoid masking everything.

    Also registered: the value without surrounding whitespace, each line of a multi-line value (a message
    may quote one line), and the backslash-escaped form that `repr()` and exception texts use.
    """
    if not value:
        return
    forms = {value, value.strip(), *(line.strip() for line in value.splitlines())}
    forms |= {f.encode("unicode_escape").decode("ascii") for f in list(forms)}
    _SECRETS.update(f for f in forms if len(f) >= 6)


def mask_secrets(text: str) -> str:
    """Replace every registered secret (only those) with ***: for bodies we post or write."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def mask(text: str) -> str:
    """Registered secrets, and anything that looks like an auth header's value, become ***: for log lines."""
    text = mask_secrets(text)
    return re.sub(
        r"(?i)(authorization|private-token|job-token)(['\"]?\s*[:=]\s*['\"]?)(bearer |token |basic )?[^\s'\",}]+",
        r"\1\2\3***",
        text,
    )


def url_problem(url: str) -> str | None:
    """Why `url` cannot be an API URL (None when it can): checked before requests ever sees it, so a typo
    in GITHUB_API_URL or CI_API_V4_URL is a one-line error naming the problem, not a crash."""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "it contains spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or out of range
    except ValueError as exc:
        return f"it cannot be parsed ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return "it must start with http:// or https://" + (f", not {parts.scheme}://" if parts.scheme else "")
    if not parts.hostname:
        return "it has no host name"
    return None


def header_problem(headers: dict[str, str]) -> str | None:
    """Which header cannot be sent, without quoting its value (it is usually a token)."""
    for name, value in headers.items():
        if re.search(r"[\r\n\x00]", value) or value != value.strip():
            return (
                f"the {name} header is not a valid HTTP header value: the token has a line break, a NUL or "
                "surrounding spaces (check how the secret was stored)"
            )
    return None


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class ForgeError(UserError):
    """A forge API call failed for good. `status` is the HTTP status, or None for transport errors."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(mask(_one_line(message)))
        self.status = status


class AmbiguousWrite(ForgeError):
    """A non-idempotent request failed in a way that leaves open whether the server acted on it."""


def debug_enabled() -> bool:
    if os.environ.get("LEPTON_CI_DEBUG", "").lower() in ("1", "true", "yes", "on"):  # as lepton_ci.cli reads it
        return True
    try:
        import click

        ctx = click.get_current_context(silent=True)
    except ImportError:  # pragma: no cover - click is a dependency
        return False
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and isinstance(root.obj, dict) and root.obj.get("debug"))


def stderr_log(line: str) -> None:
    """Default log: retries and waits as warnings on stderr; request traces only with --debug."""
    if line.startswith("debug: ") and not debug_enabled():
        return
    print(f"lepton-ci: {mask(line)}", file=sys.stderr, flush=True)


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ[name])
    except (KeyError, ValueError):
        return default


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: Any
    url: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class HttpClient:
    base_url: str
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = field(default_factory=lambda: _env_float("LEPTON_CI_HTTP_TIMEOUT", 30.0))
    max_retries: int = field(default_factory=lambda: int(_env_float("LEPTON_CI_HTTP_RETRIES", 5)))
    backoff_s: float = field(default_factory=lambda: _env_float("LEPTON_CI_HTTP_BACKOFF", 1.0))
    max_wait_s: float = field(default_factory=lambda: _env_float("LEPTON_CI_HTTP_MAX_WAIT", 120.0))
    sleep: Callable[[float], None] = time.sleep
    log: Callable[[str], None] = stderr_log
    _session: Any = None

    def __post_init__(self) -> None:
        for key, value in self.headers.items():
            if key.lower() in SECRET_HEADERS and value:
                register_secret(value.split(None, 1)[-1])  # "Bearer <token>": the token (logs keep "Bearer ***")

    @property
    def session(self) -> Any:
        """A `NoLeakSession`: token headers never follow a redirect to another origin."""
        if self._session is None:
            from lepton_ci.forge.session import NoLeakSession

            self._session = NoLeakSession()
            self._session.trust_env = True
            self._session.headers.update(self.headers)
        return self._session

    def log_masked(self, line: str) -> None:
        """Send one line to the client's log with secrets masked (retries, waits, warnings of callers)."""
        self.log(mask(line))

    def check(self, method: str, url: str) -> None:
        """Refuse, as a one-line ForgeError, a request requests could not even build."""
        problem = url_problem(url)
        if problem:
            raise ForgeError(f"{method} {url}: invalid URL: {problem}")
        problem = header_problem({k: str(v) for k, v in self.session.headers.items()})
        if problem:
            raise ForgeError(f"{method} {url}: {problem}")

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url.rstrip("/") + "/" + path.lstrip("/")

    def same_origin(self, url: str) -> bool:
        a, b = urlsplit(self.base_url), urlsplit(url)
        return (a.scheme, a.netloc.lower()) == (b.scheme, b.netloc.lower())

    def _retry_after(self, h: dict[str, str]) -> float | None:
        value = h.get("retry-after", "").strip()
        if not value:
            return None
        if re.fullmatch(r"\d+(\.\d+)?", value):
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())

    def _wait_for(self, resp: Any, attempt: int) -> tuple[float | None, bool]:
        """(seconds to wait before retrying, or None when it must not be retried; whether it was a rate limit)."""
        status = resp.status_code
        h = {k.lower(): v for k, v in resp.headers.items()}
        text = resp.text[:2000].lower() if resp.text else ""
        rate_limited = status == 429 or (
            status == 403 and (h.get("x-ratelimit-remaining") == "0" or "rate limit" in text)
        )
        if not (rate_limited or status >= 500):
            return None, False
        after = self._retry_after(h)
        if after is not None:
            return after, rate_limited
        if h.get("x-ratelimit-remaining") == "0" and h.get("x-ratelimit-reset", "").isdigit():
            return max(0.0, float(h["x-ratelimit-reset"]) - time.time()) + 1.0, rate_limited
        if rate_limited and "secondary rate limit" in text:  # GitHub: wait at least a minute, then back off
            return max(60.0, self.backoff_s * 2**attempt), rate_limited
        return self.backoff_s * 2**attempt * (0.5 + random.random() / 2), rate_limited

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        idempotent: bool | None = None,
    ) -> Response:
        import requests

        method = method.upper()
        if idempotent is None:
            idempotent = method in IDEMPOTENT
        url = self.url(path)
        self.check(method, url)
        last, last_status = "", None
        for attempt in range(self.max_retries + 1):
            self.log_masked(
                f"debug: {method} {url}{' ' + json.dumps(params) if params else ''} "
                f"headers={json.dumps({k: v for k, v in self.session.headers.items()})}"
                f"{f' body: {len(json.dumps(json_body))} bytes of JSON' if json_body is not None else ''}"
            )
            try:
                resp = self.session.request(
                    method, url, json=json_body, params=params, timeout=(min(10.0, self.timeout_s), self.timeout_s)
                )
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ) as exc:
                last = _transport_error(exc)
                if not idempotent and not _never_sent(exc):
                    raise AmbiguousWrite(
                        f"{method} {url}: {last}; the server may or may not have acted on it"
                    ) from None
                wait = self.backoff_s * 2**attempt
            except (requests.RequestException, ValueError) as exc:  # the request could not be built or sent
                raise ForgeError(f"{method} {url}: {_request_error(exc, url)}") from None
            else:
                self.log_masked(
                    f"debug: {method} {url} -> HTTP {resp.status_code}"
                    + "".join(
                        f" {k}={resp.headers[k]}"
                        for k in ("Retry-After", "x-ratelimit-remaining", "Link")
                        if k in resp.headers
                    )
                )
                wait, rate_limited = self._wait_for(resp, attempt)
                if wait is None:
                    return self._finish(method, url, resp)
                last = f"HTTP {resp.status_code}" + (f" ({_detail(resp)})" if resp.status_code < 500 else "")
                last_status = 429 if rate_limited else resp.status_code  # a 403 rate limit is not a permission error
                if not idempotent and not rate_limited:  # a 5xx on a create: it may have been created
                    raise AmbiguousWrite(
                        f"{method} {url}: {last}; the server may or may not have acted on it", status=resp.status_code
                    )
            if attempt == self.max_retries:
                break
            if wait > self.max_wait_s:
                raise ForgeError(
                    f"{method} {url}: rate limited ({last}); the API asks to wait {wait:.0f}s, more than "
                    f"the {self.max_wait_s:.0f}s lepton-ci waits (LEPTON_CI_HTTP_MAX_WAIT); try again later",
                    status=429,
                )
            self.log_masked(
                f"warning: {method} {url}: {last}; retrying in {wait:.1f}s ({attempt + 1}/{self.max_retries})"
            )
            self.sleep(wait)
        raise ForgeError(f"{method} {url}: failed after {self.max_retries + 1} attempts ({last})", status=last_status)

    def _finish(self, method: str, url: str, resp: Any) -> Response:
        try:
            body = resp.json() if resp.content else None
        except ValueError:
            body = resp.text
        out = Response(resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, body, url)
        if resp.status_code >= 400:
            raise ForgeError(f"{method} {url}: HTTP {resp.status_code}: {_detail(resp, body)}", status=resp.status_code)
        return out

    def paginate(self, path: str, params: dict[str, Any] | None = None, max_pages: int = 1000) -> Iterator[Any]:
        """Every item of a list endpoint, following `Link: rel="next"` (GitHub, GitLab) or X-Next-Page (GitLab)."""
        url: str = path
        query: dict[str, Any] | None = dict(params or {})
        seen: set[str] = set()
        for _ in range(max_pages):
            resp = self.request("GET", url, params=query)
            if not isinstance(resp.body, list):
                raise ForgeError(f"GET {resp.url}: expected a JSON list, got {type(resp.body).__name__}")
            yield from resp.body
            nxt = _next_link(resp.header("link"))
            if nxt is not None:
                if not self.same_origin(nxt):  # never send the token to another host
                    raise ForgeError(
                        f"GET {resp.url}: the next page is on another host ({urlsplit(nxt).netloc}); "
                        "refusing to follow it with the API token"
                    )
                url, query = nxt, None
            elif (resp.header("x-next-page") or "").isdigit():
                url, query = path, {**(params or {}), "page": int(resp.header("x-next-page") or 0)}
            else:
                return
            key = url + json.dumps(query, sort_keys=True)
            if key in seen:
                raise ForgeError(f"GET {resp.url}: the API's next page points back to a page already read")
            seen.add(key)
        raise ForgeError(f"GET {self.url(path)}: more than {max_pages} pages")


def _transport_error(exc: Exception) -> str:
    """A short, token-free description of a requests transport error."""
    import requests

    if isinstance(exc, requests.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.Timeout):
        return "timed out waiting for the response"
    text = str(exc)
    for needle, short in (
        ("Connection refused", "connection refused"),
        ("reset by peer", "connection reset"),
        ("RemoteDisconnected", "connection closed without a response"),
        ("Remote end closed", "connection closed without a response"),
        ("Name or service not known", "host name not found"),
        ("Temporary failure in name resolution", "host name not found"),
        ("CERTIFICATE_VERIFY_FAILED", "TLS certificate verification failed"),
    ):
        if needle in text:
            return short
    return f"{type(exc).__name__}: {text[:200]}"


def _request_error(exc: Exception, url: str) -> str:
    """A short, token-free description of a request requests refused to build or send (never retried).

    Exception texts are not trusted to be token-free (InvalidHeader quotes the header value), so the
    known kinds get a message of our own.
    """
    import requests

    if isinstance(exc, requests.exceptions.InvalidHeader):
        return (
            "a request header is not a valid HTTP header value: the token has a line break, a NUL or "
            "surrounding spaces (check how the secret was stored)"
        )
    if isinstance(
        exc, (requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema, requests.exceptions.InvalidURL)
    ):
        return f"invalid URL: {url_problem(url) or type(exc).__name__}"
    if isinstance(exc, requests.TooManyRedirects):
        return "too many redirects"
    return f"{type(exc).__name__}: {mask(_one_line(str(exc)))[:200]}"


def _never_sent(exc: Exception) -> bool:
    """True when the request cannot have reached the server (connect failed)."""
    import requests

    if isinstance(exc, requests.ConnectTimeout):
        return True
    text = str(exc)
    return any(
        s in text
        for s in (
            "NewConnectionError",
            "Connection refused",
            "Name or service not known",
            "Temporary failure in name resolution",
            "Failed to resolve",
        )
    )


def _detail(resp: Any, body: Any = None) -> str:
    """The API's own explanation, on one line: GitHub's message and errors, GitLab's message or error."""
    if body is None:
        try:
            body = resp.json() if resp.content else None
        except ValueError:
            body = resp.text
    if isinstance(body, dict):
        parts = []
        msg = body.get("message") if body.get("message") is not None else body.get("error")
        if isinstance(msg, dict):  # GitLab validation errors: {"note": ["is too long ..."]}
            msg = "; ".join(f"{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in msg.items())
        if msg:
            parts.append(str(msg))
        if body.get("error_description"):
            parts.append(str(body["error_description"]))
        for e in body.get("errors") or []:
            if isinstance(e, dict):
                parts.append(
                    str(e.get("message") or " ".join(str(e.get(k)) for k in ("resource", "field", "code") if e.get(k)))
                )
            else:
                parts.append(str(e))
        text = "; ".join(parts) or json.dumps(body)[:300]
    else:
        text = str(body or "")[:300] or "(no body)"
    return _one_line(text)[:500]


def _next_link(link: str | None) -> str | None:
    if not link:
        return None
    for part in link.split(","):
        m = re.match(r"\s*<([^>]+)>\s*;(.*)$", part)
        if m and re.search(r'rel="?[^";]*\bnext\b', m.group(2)):
            return m.group(1)
    return None


def dumps(obj: Any) -> str:
    return mask(json.dumps(obj))
