"""HTTP for forge APIs: retries with backoff, rate-limit waits, timeouts, and tokens masked everywhere.

Retried: connection errors and resets, timeouts, 5xx, 429, and GitHub's rate limits (403/429 with
`x-ratelimit-remaining: 0`, or a "secondary rate limit" message). Waits honour `Retry-After` and
`x-ratelimit-reset`; a wait longer than `max_wait_s` is not slept through but reported. Nothing that
leaves this module (exceptions, log lines) can contain a registered secret.
"""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from lepton_ci.errors import UserError

_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret so `mask` removes it; short values are ignored to avoid masking everything."""
    if value and len(value) >= 6:
        _SECRETS.add(value)


def mask(text: str) -> str:
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return re.sub(r"(?i)(authorization|private-token|job-token)(['\"]?\s*[:=]\s*['\"]?)(bearer |token )?[^\s'\",}]+",
                  r"\1\2\3***", text)


class ForgeError(UserError):
    """A forge API call failed for good. `status` is the HTTP status, or None for transport errors."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(mask(message))
        self.status = status


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
    timeout_s: float = 30.0
    max_retries: int = 5
    backoff_s: float = 1.0
    max_wait_s: float = 120.0
    sleep: Callable[[float], None] = time.sleep
    log: Callable[[str], None] = lambda s: None
    _session: Any = None

    def __post_init__(self) -> None:
        for key, value in self.headers.items():
            if key.lower() in ("authorization", "private-token", "job-token"):
                register_secret(value.split()[-1])

    @property
    def session(self) -> Any:
        if self._session is None:
            import requests

            self._session = requests.Session()
            self._session.headers.update(self.headers)
        return self._session

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url.rstrip("/") + "/" + path.lstrip("/")

    def _wait_for(self, resp: Any, attempt: int) -> float | None:
        """Seconds to wait before retrying this response, or None when it must not be retried."""
        status = resp.status_code
        h = {k.lower(): v for k, v in resp.headers.items()}
        text = resp.text[:2000].lower() if resp.text else ""
        rate_limited = status == 429 or (status == 403 and (h.get("x-ratelimit-remaining") == "0" or "rate limit" in text))
        if not (rate_limited or status >= 500):
            return None
        if h.get("retry-after", "").strip().isdigit():
            return float(h["retry-after"])
        if h.get("x-ratelimit-remaining") == "0" and h.get("x-ratelimit-reset", "").isdigit():
            return max(0.0, float(h["x-ratelimit-reset"]) - time.time()) + 1.0
        if rate_limited and "secondary rate limit" in text:
            return max(60.0, self.backoff_s * 2 ** attempt)
        return self.backoff_s * 2 ** attempt * (0.5 + random.random() / 2)

    def request(self, method: str, path: str, *, json_body: Any = None, params: dict[str, Any] | None = None) -> Response:
        import requests

        url = self.url(path)
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                resp = self.session.request(method, url, json=json_body, params=params, timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = f"{type(exc).__name__}: {exc}"
                wait = self.backoff_s * 2 ** attempt
            else:
                wait = self._wait_for(resp, attempt)
                if wait is None:
                    return self._finish(method, url, resp)
                last = f"HTTP {resp.status_code}"
            if attempt == self.max_retries:
                break
            if wait > self.max_wait_s:
                raise ForgeError(f"{method} {url}: rate limited; the API asks to wait {wait:.0f}s (more than "
                                 f"{self.max_wait_s:.0f}s); try again later", status=429)
            self.log(mask(f"{method} {url}: {last}; retrying in {wait:.1f}s ({attempt + 1}/{self.max_retries})"))
            self.sleep(wait)
        raise ForgeError(f"{method} {url}: failed after {self.max_retries + 1} attempts ({last})")

    def _finish(self, method: str, url: str, resp: Any) -> Response:
        try:
            body = resp.json() if resp.content else None
        except ValueError:
            body = resp.text
        out = Response(resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, body, url)
        if resp.status_code >= 400:
            detail = body.get("message") or body.get("error") if isinstance(body, dict) else str(body)[:300]
            raise ForgeError(f"{method} {url}: HTTP {resp.status_code}: {detail}", status=resp.status_code)
        return out

    def paginate(self, path: str, params: dict[str, Any] | None = None, max_pages: int = 1000) -> Iterator[Any]:
        """Every item of a list endpoint, following `Link: rel="next"` (GitHub, GitLab) or X-Next-Page (GitLab)."""
        url: str | None = path
        query = dict(params or {})
        for _ in range(max_pages):
            resp = self.request("GET", url, params=query)
            if not isinstance(resp.body, list):
                raise ForgeError(f"GET {resp.url}: expected a JSON list, got {type(resp.body).__name__}")
            yield from resp.body
            url = _next_link(resp.header("link"))
            if url is None and (resp.header("x-next-page") or "").isdigit():
                url, query = path, {**query, "page": int(resp.header("x-next-page"))}
            elif url is not None:
                query = {}
            if url is None:
                return


def _next_link(link: str | None) -> str | None:
    if not link:
        return None
    for part in link.split(","):
        m = re.match(r'\s*<([^>]+)>\s*;\s*rel="?([^";]+)"?', part)
        if m and "next" in m.group(2).split():
            return m.group(1)
    return None


def dumps(obj: Any) -> str:
    return mask(json.dumps(obj))
