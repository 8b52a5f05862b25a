"""A token service for the registry's real `auth: token` mode (the distribution spec's bearer flow).

The registry (tests/support/oci_registry.py with `token=`) answers 401 with
`WWW-Authenticate: Bearer realm=…,service=…,scope=…`; a client fetches a JWT here with basic auth and
retries with it. The registry verifies the JWT itself (ES256, certificate chain in the `x5c` header to its
rootcertbundle, issuer, audience, expiry, granted actions), so only the token service is ours. It records
every request so tests can see which scopes were asked for and that no password reached the registry.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

SERVICE = "lepton-test-registry"
ISSUER = "lepton-test-token-issuer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenService:
    """Grants `pull`/`push` on any repository to USER:PASSWORD, `pull` only to anonymous callers when
    `anonymous_pull`, and nothing to anyone else (401)."""

    def __init__(self, directory: Path, users: dict[str, str], *, anonymous_pull: bool = False) -> None:
        self.dir = Path(directory)
        self.users = users
        self.anonymous_pull = anonymous_pull
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert_path = self.dir / "token-ca.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def token(self, subject: str, access: list[dict[str, Any]]) -> str:
        header = {
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _grant(self, user: str | None, scopes: list[str]) -> list[dict[str, Any]]:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = [a for a in actions.split(",") if a]
            allowed = {"pull", "push", "delete", "*"} if user else ({"pull"} if self.anonymous_pull else set())
            granted = [a for a in wanted if a in allowed]
            if kind in ("repository", "registry") and granted:
                access.append({"type": kind, "name": name, "actions": granted})
        return access

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                auth = self.headers.get("Authorization", "")
                user = None
                if auth.startswith("Basic "):
                    name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    if service.users.get(name) != password:
                        return self._send(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
                    user = name
                with service.lock:
                    service.requests.append({"path": url.path, "query": query, "user": user})
                if url.path != "/token" or query.get("service") != [SERVICE]:
                    return self._send(400, {"errors": [{"code": "UNSUPPORTED", "message": "wrong service"}]})
                if user is None and not service.anonymous_pull:
                    return self._send(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]})
                access = service._grant(user, query.get("scope", []))
                token = service.token(user or "", access)
                self._send(200, {"token": token, "access_token": token, "expires_in": 300})

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def registry_auth(self) -> str:
        return (
            f"auth:\n  token:\n    realm: {self.realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
            f"    rootcertbundle: {self.cert_path}\n"
        )

    def __enter__(self) -> TokenService:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
