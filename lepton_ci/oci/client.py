"""A small client for the OCI distribution API: blobs, manifests, tags, the catalog.

What it promises its callers (the `oci://` registry and, later, the image builder):
- "Absent" is a positive answer only: a 404 that the registry explains (BLOB_UNKNOWN, MANIFEST_UNKNOWN,
  NAME_UNKNOWN) is `None`; every other failure raises. A server that cannot be reached, times out or
  answers 429/5xx after the retries is a `TransientError`; a refusal (401, 403, a bad request) is a
  `RegistryError` naming the credentials' source. Nothing here ever turns an error into "not there".
- Bytes are streamed both ways: a file goes up in one PUT (or in chunks when it is large) straight from
  disk, and a blob comes down as a stream that resumes with a `Range` request when the connection breaks.
- Credentials never follow a redirect to another origin (blob downloads are often redirected to object
  storage), and never appear in a message.

GET and HEAD are retried on connection errors, 429 and 5xx (urllib3's `Retry`, honouring Retry-After).
Uploads are retried as a whole, from a new upload session, because a half-sent body cannot be replayed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from lepton_ci.errors import RegistryError, TransientError
from lepton_ci.forge.http import mask
from lepton_ci.forge.session import NoLeakSession
from lepton_ci.oci.auth import Credentials, TokenCache, basic_header, find_credentials, parse_challenge
from lepton_ci.oci.reference import RegistryRef
from lepton_ci.progress import CountingReader, transfer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_LIMIT = 4 * 1024 * 1024  # the distribution spec's recommended manifest size limit
CHUNK = 1024 * 1024
ABSENT_CODES = {"BLOB_UNKNOWN", "MANIFEST_UNKNOWN", "NAME_UNKNOWN"}
_UNSET: Any = object()


def _env_int(name: str, default: int) -> int:
    try:
        return max(0, int(os.environ.get(name, default)))
    except ValueError:
        return default


def sha256_file(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def digest_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _error_codes(resp: requests.Response) -> tuple[set[str], str]:
    """The distribution error codes of an answer, and a short text for messages."""
    try:
        body = resp.json() if resp.content and len(resp.content) < 65536 else {}
    except ValueError:
        body = {}
    errors = body.get("errors") if isinstance(body, dict) else None
    codes, texts = set(), []
    for e in errors if isinstance(errors, list) else []:
        if isinstance(e, dict):
            codes.add(str(e.get("code", "")))
            texts.append(f"{e.get('code', '')}: {e.get('message', '')}".strip(": "))
    return codes, "; ".join(texts)[:300]


class OciClient:
    """One registry host. Repository names are passed per call (each model is its own repository)."""

    def __init__(
        self,
        ref: RegistryRef,
        *,
        credentials: Credentials | None = _UNSET,
        retries: int | None = None,
        timeout: float | None = None,
        chunk_size: int | None = None,
    ) -> None:
        self.ref = ref
        self.base = ref.base_url
        self.credentials = find_credentials(ref.host) if credentials is _UNSET else credentials
        self.retries = _env_int("LEPTON_CI_HTTP_RETRIES", 4) if retries is None else retries
        self.timeout = float(timeout or _env_int("LEPTON_CI_HTTP_TIMEOUT", 60) or 60)
        # 0: every file goes up in one streamed PUT (the fastest; what `docker push` does in one PATCH). A size:
        # files above it go up in PATCHes of that size, each streamed from disk, for registries or proxies
        # that cap a request's body; a 413 from the registry switches to CHUNK_FALLBACK by itself.
        self.chunk_size = chunk_size if chunk_size is not None else _env_int("LEPTON_CI_OCI_CHUNK_SIZE", 0)
        self.tokens = TokenCache()
        self.basic_ok = False
        self.session = NoLeakSession()
        self.session.headers["User-Agent"] = "lepton-ci"
        retry = Retry(
            total=self.retries,
            connect=self.retries,
            read=self.retries,
            status=self.retries,
            backoff_factor=0.5,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=frozenset({"GET", "HEAD"}),
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        adapter = _LargeBlocks(max_retries=retry, pool_maxsize=8)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    # ---- transport and auth ----------------------------------------------------------------------------

    def _who(self) -> str:
        return f"the credentials from {self.credentials.source}" if self.credentials else "anonymous access"

    def _auth(self, scope: str) -> str | None:
        token = self.tokens.get(scope)
        if token:
            return f"Bearer {token}"
        if self.basic_ok and self.credentials and not self.credentials.identity_token:
            return basic_header(self.credentials)
        return None

    def _fetch_token(self, params: dict[str, str], scope: str) -> str:
        realm = params.get("realm")
        if not realm or not realm.startswith(("https://", "http://")):
            raise RegistryError(f"registry {self.ref.host} asked for a bearer token without a usable realm")
        if realm.startswith("http://") and self.ref.scheme == "https":
            raise RegistryError(f"registry {self.ref.host} sent its token realm over plain HTTP ({realm}); refusing")
        query: list[tuple[str, str]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        for s in scope.split(" "):
            query.append(("scope", s))
        headers = {}
        if self.credentials and not self.credentials.identity_token:
            headers["Authorization"] = basic_header(self.credentials)
        try:
            if self.credentials and self.credentials.identity_token:  # OAuth2 refresh-token grant (docker's)
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": self.credentials.password,
                    "client_id": "lepton-ci",
                }
                form.update(query)
                resp = self.session.post(realm, data=form, timeout=self.timeout)
            else:
                resp = self.session.get(realm, params=query, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise TransientError(f"cannot reach the token service {realm}: {mask(str(exc))[:200]}") from None
        if resp.status_code in (401, 403):
            raise RegistryError(
                f"registry {self.ref.host}: the token service refused {self._who()} ({resp.status_code}); "
                f"check LEPTON_REGISTRY_USER/LEPTON_REGISTRY_PASSWORD or `docker login {self.ref.host}`"
            )
        if resp.status_code >= 500 or resp.status_code == 429:
            raise TransientError(f"token service {realm} answered {resp.status_code}")
        try:
            body = resp.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if resp.status_code != 200 or not isinstance(token, str) or not token:
            raise RegistryError(f"token service {realm} answered {resp.status_code} without a token")
        from lepton_ci.forge.http import register_secret

        register_secret(token)
        self.tokens.put(scope, token, body.get("expires_in"))
        return f"Bearer {token}"

    def _answer(self, resp: requests.Response, scope: str) -> str | None:
        """What to send after a 401, from its challenge; None when there is nothing better to try."""
        scheme, params = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
        if scheme == "bearer":
            return self._fetch_token(params, scope)
        if scheme == "basic" and self.credentials and not self.basic_ok:
            self.basic_ok = True
            return basic_header(self.credentials)
        return None

    def request(
        self,
        method: str,
        url: str,
        scope: str,
        *,
        headers: dict[str, str] | None = None,
        body: Any = None,
        params: Any = None,
        stream: bool = False,
        what: str,
    ) -> requests.Response:
        """Send one request with auth, answering one 401 challenge. `body` is bytes or a seekable file."""
        if not url.startswith(("http://", "https://")):
            url = urljoin(self.base + "/", url.lstrip("/"))
        start = body.tell() if hasattr(body, "seek") else None
        for attempt in range(2):
            sent = dict(headers or {})
            auth = self._auth(scope)
            if auth:
                sent["Authorization"] = auth
            try:
                resp = self.session.request(
                    method, url, headers=sent, data=body, params=params, stream=stream, timeout=self.timeout
                )
            except requests.exceptions.SSLError as exc:
                raise RegistryError(
                    f"{what}: TLS to {self.ref.host} failed ({mask(str(exc))[:160]}); for a registry without "
                    "TLS, name it in --insecure-registry or LEPTON_CI_INSECURE_REGISTRY"
                ) from None
            except requests.RequestException as exc:
                raise TransientError(f"{what}: cannot reach registry {self.ref.host}: {mask(str(exc))[:200]}") from None
            if resp.status_code != 401 or attempt == 1:
                return resp
            answer = self._answer(resp, scope)
            if answer is None:
                return resp
            resp.close()
            if start is not None:
                body.seek(start)
        return resp  # pragma: no cover - the loop always returns

    def fail(self, resp: requests.Response, what: str) -> Exception:
        """The exception for an answer the caller did not expect (never a positive "absent")."""
        codes, text = _error_codes(resp)
        status = resp.status_code
        detail = f" ({text})" if text else ""
        if status == 401:
            hint = (
                f"set LEPTON_REGISTRY_USER and LEPTON_REGISTRY_PASSWORD, or run `docker login {self.ref.host}`"
                if not self.credentials
                else "they are wrong or expired"
            )
            return RegistryError(f"{what}: registry {self.ref.host} refused {self._who()} (401){detail}; {hint}")
        if status == 403:
            return RegistryError(f"{what}: registry {self.ref.host} denied {self._who()} (403){detail}")
        if status == 429 or status >= 500:
            return TransientError(f"{what}: registry {self.ref.host} answered {status}{detail} after retries")
        return RegistryError(f"{what}: registry {self.ref.host} answered {status}{detail}")

    def _absent(self, resp: requests.Response) -> bool:
        """A 404 the registry explains as "no such thing". A bare 404 (a proxy, a wrong path) is not."""
        if resp.status_code != 404:
            return False
        codes, _ = _error_codes(resp)
        return bool(codes & ABSENT_CODES) or resp.request.method == "HEAD"

    @staticmethod
    def scope(repo: str, actions: str = "pull") -> str:
        return f"repository:{repo}:{actions}"

    # ---- API -------------------------------------------------------------------------------------------

    def ping(self) -> None:
        """GET /v2/: the registry speaks the distribution API (a 401 is fine: it asks for auth)."""
        resp = self.request("GET", "/v2/", "registry:catalog:*", what=f"registry {self.ref.url()}")
        if resp.status_code not in (200, 401):
            raise self.fail(resp, f"registry {self.ref.url()} does not answer the OCI distribution API")

    def blob_size(self, repo: str, digest: str) -> int | None:
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", self.scope(repo), what=f"checking blob {digest[:19]}")
        if resp.status_code == 200:
            return int(resp.headers.get("Content-Length", "-1"))
        if self._absent(resp):
            return None
        raise self.fail(resp, f"checking blob {digest[:19]} in {repo}")

    def open_blob(self, repo: str, digest: str) -> BinaryIO | None:
        """A stream of the blob's bytes (unverified: the caller hashes), or None when it is not there."""
        what = f"reading blob {digest[:19]} of {repo}"
        resp = self.request("GET", f"/v2/{repo}/blobs/{digest}", self.scope(repo), stream=True, what=what)
        if resp.status_code == 200:
            return io.BufferedReader(_ResumingStream(self, repo, digest, resp, what), CHUNK)
        if self._absent(resp):
            resp.close()
            return None
        resp.close()
        raise self.fail(resp, what)

    def read_blob(self, repo: str, digest: str, limit: int) -> bytes | None:
        """A small blob, whole and verified against its digest."""
        stream = self.open_blob(repo, digest)
        if stream is None:
            return None
        with stream:
            data = stream.read(limit + 1)
        if len(data) > limit:
            raise RegistryError(f"blob {digest[:19]} of {repo} is larger than {limit} bytes")
        if digest_bytes(data) != digest:
            raise RegistryError(f"blob {digest[:19]} of {repo} does not match its digest (corrupt or substituted)")
        return data

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount: the registry links a blob it already holds; no bytes travel."""
        scope = f"{self.scope(repo, 'pull,push')} {self.scope(from_repo)}"
        what = f"mounting blob {digest[:19]} into {repo}"
        resp = self.request(
            "POST", f"/v2/{repo}/blobs/uploads/", scope, params={"mount": digest, "from": from_repo}, what=what
        )
        if resp.status_code == 201:
            return True
        if resp.status_code == 202:  # not mountable here: the registry opened an upload session instead
            location = resp.headers.get("Location")
            if location:
                self._cancel_location(urljoin(resp.url, location), scope)
            return False
        raise self.fail(resp, what)

    def _start_upload(self, repo: str, scope: str, what: str) -> str:
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope, what=what)
        if resp.status_code != 202 or not resp.headers.get("Location"):
            raise self.fail(resp, what)
        return urljoin(resp.url, resp.headers["Location"])

    def _retrying(self, upload: Callable[[], None]) -> None:
        """Run an upload, again from a new session after a transient failure (a half-sent body cannot be
        resumed), at most `retries` times."""
        attempts = max(1, self.retries)
        for attempt in range(attempts):
            try:
                upload()
                return
            except TransientError:
                if attempt == attempts - 1:
                    raise

    def push_blob(self, repo: str, path: Path, digest: str, size: int) -> bool:
        """Upload a file as the blob `digest` unless the repository has it; True when bytes were sent."""
        if self.blob_size(repo, digest) == size:
            return False
        scope = self.scope(repo, "pull,push")
        what = f"uploading {path.name} ({size:,} bytes) to {repo}"

        def upload() -> None:
            with open(path, "rb") as f, transfer(f"push {path.name}", size) as advance:
                if self.chunk_size and size > self.chunk_size:
                    self._upload_chunked(repo, f, digest, size, scope, what, advance)
                else:
                    self._upload_monolithic(repo, CountingReader(f, advance), digest, size, scope, what)

        try:
            self._retrying(upload)
        except _TooLarge:
            self.chunk_size = CHUNK_FALLBACK  # the registry caps request bodies: go on in chunks
            self._retrying(upload)
        return True

    def push_bytes(self, repo: str, data: bytes, media_what: str = "blob") -> str:
        digest = digest_bytes(data)
        if self.blob_size(repo, digest) == len(data):
            return digest
        scope = self.scope(repo, "pull,push")
        what = f"uploading a {media_what} to {repo}"
        self._retrying(lambda: self._upload_monolithic(repo, io.BytesIO(data), digest, len(data), scope, what))
        return digest

    def _upload_monolithic(self, repo: str, f: Any, digest: str, size: int, scope: str, what: str) -> None:
        location = self._start_upload(repo, scope, what)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        resp = self.request("PUT", location, scope, headers=headers, body=f, params={"digest": digest}, what=what)
        if resp.status_code == 413 and size > CHUNK_FALLBACK:
            self._cancel_location(location, scope)
            raise _TooLarge()
        if resp.status_code != 201:
            raise self.fail(resp, what)

    def _cancel_location(self, location: str, scope: str) -> None:
        with contextlib.suppress(RegistryError, TransientError):  # the registry expires sessions itself
            self.request("DELETE", location, scope, what="cancelling an upload")

    def _upload_chunked(
        self, repo: str, f: BinaryIO, digest: str, size: int, scope: str, what: str, advance: Callable[[int], None]
    ) -> None:
        location = self._start_upload(repo, scope, what)
        step = self.chunk_size or CHUNK_FALLBACK
        offset = 0
        while offset < size:
            length = min(step, size - offset)
            end = offset + length - 1
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(length),
                "Content-Range": f"{offset}-{end}",
            }
            f.seek(offset)
            window = _Window(f, length, advance)  # streamed from disk, never a chunk in memory
            resp = self.request("PATCH", location, scope, headers=headers, body=window, what=what)
            if window.remaining:
                raise RegistryError(f"{what}: the file shrank while uploading")
            if resp.status_code != 202 or not resp.headers.get("Location"):
                raise self.fail(resp, what)
            location = urljoin(resp.url, resp.headers["Location"])
            offset = end + 1
        resp = self.request(
            "PUT", location, scope, headers={"Content-Length": "0"}, params={"digest": digest}, what=what
        )
        if resp.status_code != 201:
            raise self.fail(resp, what)

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str = OCI_MANIFEST) -> str:
        what = f"writing manifest {reference} of {repo}"
        if len(data) > MANIFEST_LIMIT:
            raise RegistryError(f"{what}: manifest of {len(data):,} bytes is over the 4 MiB limit")
        digest = digest_bytes(data)
        for attempt in range(max(1, self.retries)):
            resp = self.request(
                "PUT",
                f"/v2/{repo}/manifests/{reference}",
                self.scope(repo, "pull,push"),
                headers={"Content-Type": media_type},
                body=data,
                what=what,
            )
            if resp.status_code == 201:
                echoed = resp.headers.get("Docker-Content-Digest")
                if echoed and echoed != digest:
                    raise RegistryError(f"{what}: the registry stored it as {echoed}, not {digest}")
                return digest
            if not (resp.status_code == 429 or resp.status_code >= 500) or attempt == max(1, self.retries) - 1:
                raise self.fail(resp, what)  # a PUT of the same bytes is idempotent, so 5xx is retried
        raise AssertionError("unreachable")  # pragma: no cover

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str, str] | None:
        """(bytes, media type, digest) of a manifest by tag or digest; None when there is none."""
        what = f"reading manifest {reference} of {repo}"
        resp = self.request(
            "GET",
            f"/v2/{repo}/manifests/{reference}",
            self.scope(repo),
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
            stream=True,
            what=what,
        )
        with resp:
            if self._absent(resp):
                return None
            if resp.status_code != 200:
                raise self.fail(resp, what)
            data = resp.raw.read(MANIFEST_LIMIT + 1, decode_content=True)
        if len(data) > MANIFEST_LIMIT:
            raise RegistryError(f"{what}: larger than the 4 MiB manifest limit")
        digest = digest_bytes(data)
        if reference.startswith("sha256:") and reference != digest:
            raise RegistryError(f"{what}: the bytes do not match the digest asked for (substituted)")
        echoed = resp.headers.get("Docker-Content-Digest")
        if echoed and echoed.startswith("sha256:") and echoed != digest:
            raise RegistryError(f"{what}: the bytes do not match the registry's own digest {echoed[:19]}")
        media = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return data, media, digest

    def manifest_digest(self, repo: str, reference: str) -> str | None:
        what = f"checking manifest {reference} of {repo}"
        resp = self.request(
            "HEAD",
            f"/v2/{repo}/manifests/{reference}",
            self.scope(repo),
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
            what=what,
        )
        if resp.status_code == 200:
            return resp.headers.get("Docker-Content-Digest") or None
        if self._absent(resp):
            return None
        raise self.fail(resp, what)

    def delete_manifest(self, repo: str, digest: str) -> None:
        what = f"deleting manifest {digest[:19]} of {repo}"
        resp = self.request("DELETE", f"/v2/{repo}/manifests/{digest}", self.scope(repo, "delete"), what=what)
        if resp.status_code not in (202, 200) and not self._absent(resp):
            raise self.fail(resp, what)

    def _pages(self, url: str, scope: str, key: str, what: str) -> Iterator[list[str]] | None:
        resp = self.request("GET", url, scope, params={"n": 1000}, what=what)
        if self._absent(resp):
            return None
        return self._more_pages(resp, scope, key, what)

    def _more_pages(self, resp: requests.Response, scope: str, key: str, what: str) -> Iterator[list[str]]:
        seen = 0
        while True:
            if resp.status_code != 200:
                raise self.fail(resp, what)
            try:
                body = resp.json()
                items = body.get(key) or []
                if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
                    raise ValueError
            except (ValueError, AttributeError):
                raise RegistryError(f"{what}: the registry answered something that is not its JSON list") from None
            yield items
            seen += 1
            nxt = resp.links.get("next", {}).get("url")
            if not nxt or seen > 10_000:
                return
            resp = self.request("GET", urljoin(resp.url, nxt), scope, what=what)

    def list_tags(self, repo: str) -> list[str] | None:
        """Every tag of a repository (all pages); None when the registry says the repository is unknown."""
        what = f"listing tags of {repo}"
        pages = self._pages(f"/v2/{repo}/tags/list", self.scope(repo), "tags", what)
        if pages is None:
            return None
        return [t for page in pages for t in page]

    def catalog(self) -> list[str]:
        what = f"listing repositories of {self.ref.host}"
        hint = "this registry does not list its repositories (_catalog): name the model, e.g. `registry -m NAME check`"
        try:
            pages = self._pages("/v2/_catalog", "registry:catalog:*", "repositories", what)
            if pages is None:
                raise RegistryError(f"{what}: {hint}")
            return [r for page in pages for r in page]
        except RegistryError as exc:
            if "(_catalog)" in exc.message:
                raise
            raise RegistryError(f"{exc.message}; {hint}") from None

    # ---- referrers (OCI 1.1), with the tag-schema fallback for registries without the API ---------------

    @staticmethod
    def fallback_tag(subject: str) -> str:
        """The referrers tag schema: `sha256-<hex>` names an index of the artifacts that refer to `subject`."""
        return subject.replace(":", "-")

    def referrers(self, repo: str, subject: str, artifact_type: str | None = None) -> list[dict[str, Any]]:
        """Descriptors of the manifests whose `subject` is `subject`: the referrers API where the registry has
        it, else the fallback tag's index (distribution 2.8, older Harbor and ECR answer 404)."""
        what = f"listing referrers of {subject[:19]} in {repo}"
        resp = self.request("GET", f"/v2/{repo}/referrers/{subject}", self.scope(repo), what=what)
        if resp.status_code == 200 and "json" in resp.headers.get("Content-Type", ""):
            manifests = resp.json().get("manifests") or []
        elif resp.status_code in (404, 405):
            got = self.get_manifest(repo, self.fallback_tag(subject))
            manifests = json.loads(got[0]).get("manifests") or [] if got else []
        else:
            raise self.fail(resp, what)
        return [m for m in manifests if artifact_type is None or m.get("artifactType") == artifact_type]

    def attach(self, repo: str, subject: dict[str, Any], manifest: dict[str, Any]) -> str:
        """Push `manifest` with `subject` set; where the registry has no referrers API, also add it to the
        fallback tag's index (read, append, write: serialised like every registry write, by the CI's lock)."""
        body = manifest_json({**manifest, "subject": subject})
        resp_digest = self.put_manifest(repo, digest_bytes(body), body, manifest.get("mediaType", OCI_MANIFEST))
        probe = self.request(
            "GET", f"/v2/{repo}/referrers/{subject['digest']}", self.scope(repo), what="probing the referrers API"
        )
        if probe.status_code == 200 and "json" in probe.headers.get("Content-Type", ""):
            return resp_digest
        tag = self.fallback_tag(subject["digest"])
        got = self.get_manifest(repo, tag)
        index: dict[str, Any] = json.loads(got[0]) if got else {"schemaVersion": 2, "mediaType": OCI_INDEX}
        listed: list[dict[str, Any]] = index.setdefault("manifests", [])
        entry: dict[str, Any] = {"mediaType": manifest.get("mediaType", OCI_MANIFEST), "digest": resp_digest}
        entry["size"] = len(body)
        if manifest.get("artifactType"):
            entry["artifactType"] = manifest["artifactType"]
        if all(m.get("digest") != resp_digest for m in listed):
            listed.append(entry)
        self.put_manifest(repo, tag, manifest_json(index), OCI_INDEX)
        return resp_digest


class _LargeBlocks(HTTPAdapter):
    """Sends request bodies from files in 1 MiB blocks instead of urllib3's 16 KiB: far fewer system calls
    and Python-level reads for a model upload."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("blocksize", 1024 * 1024)
        super().init_poolmanager(*args, **kwargs)


class _TooLarge(Exception):
    """The registry answered 413 to a one-request upload: retry in chunks."""


CHUNK_FALLBACK = 64 * 1024 * 1024


class _Window:
    """`length` bytes of an open file from its current position, as a request body requests can stream
    (it knows the length from `__len__`, so it sends Content-Length, not chunked transfer encoding)."""

    def __init__(self, f: BinaryIO, length: int, advance: Callable[[int], None]) -> None:
        self.f, self.remaining, self.advance = f, length, advance
        self.start, self.length = f.tell(), length

    def __len__(self) -> int:
        return self.remaining

    def read(self, n: int = -1) -> bytes:
        n = self.remaining if n is None or n < 0 else min(n, self.remaining)
        data = self.f.read(n)
        self.remaining -= len(data)
        self.advance(len(data))
        return data

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(CHUNK):
            yield chunk

    def tell(self) -> int:
        return self.length - self.remaining

    def seek(self, pos: int, whence: int = 0) -> int:  # a 401 retry sends the window again from its start
        self.f.seek(self.start + pos)
        self.remaining = self.length - pos
        return pos


class _ResumingStream(io.RawIOBase):
    """A blob download that picks up where it broke (`Range: bytes=N-`), a few times, then gives up."""

    MAX_RESUMES = 5

    def __init__(self, client: OciClient, repo: str, digest: str, resp: requests.Response, what: str) -> None:
        self.client, self.repo, self.digest, self.resp, self.what = client, repo, digest, resp, what
        self.pos = 0
        self.resumes = 0
        length = resp.headers.get("Content-Length", "")
        self.total = int(length) if length.isdigit() else None  # to tell a cut connection from the end

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while True:
            try:
                # Straight into the caller's buffer from http.client (urllib3's read() would copy each chunk
                # once more); blobs are never content-encoded, and the caller checks every byte's digest.
                fp = getattr(self.resp.raw, "_fp", None)
                if fp is not None and hasattr(fp, "readinto"):
                    n = fp.readinto(b)
                else:
                    data = self.resp.raw.read(len(b), decode_content=False)
                    n = len(data)
                    b[:n] = data
                if n == 0 and len(b) and self.total is not None and self.pos < self.total:
                    raise ConnectionError(f"connection closed after {self.pos} of {self.total} bytes")
                break
            except Exception as exc:  # http.client's IncompleteRead, urllib3's errors, OSError: resume
                self._resume(exc)
        self.pos += n
        return n

    def _resume(self, exc: Exception) -> None:
        self.resp.close()
        if self.resumes >= self.MAX_RESUMES:
            raise TransientError(f"{self.what}: the connection broke {self.resumes + 1} times ({exc})") from None
        self.resumes += 1
        resp = self.client.request(
            "GET",
            f"/v2/{self.repo}/blobs/{self.digest}",
            self.client.scope(self.repo),
            headers={"Range": f"bytes={self.pos}-"},
            stream=True,
            what=self.what,
        )
        if resp.status_code != 206:
            resp.close()
            if resp.status_code == 200:
                raise TransientError(f"{self.what}: the connection broke and the registry cannot resume (no Range)")
            raise self.client.fail(resp, self.what)
        self.resp = resp

    def close(self) -> None:
        try:
            self.resp.close()
        finally:
            super().close()


def manifest_json(data: dict[str, Any]) -> bytes:
    """The canonical bytes lepton-ci writes a manifest as (sorted keys, no spaces): one document, one digest."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
