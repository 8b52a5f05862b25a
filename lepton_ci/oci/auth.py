"""Registry credentials and the token dance, as docker, oras and skopeo do them.

Where credentials come from, first match wins:
1. `LEPTON_REGISTRY_USER` and `LEPTON_REGISTRY_PASSWORD` (a CI secret; on GitHub `${{ github.actor }}` and
   `${{ github.token }}` for GHCR, on GitLab `$CI_REGISTRY_USER` / `$CI_REGISTRY_PASSWORD`);
2. the docker config (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`): a credential helper
   for the host (`credHelpers`), the `auths` entry for the host, then the default `credsStore`.
No credentials is fine: anonymous access is tried, and a registry that refuses it says so (401).

Authentication itself follows the server's `WWW-Authenticate` challenge: `Basic` sends the credentials;
`Bearer realm=…,service=…,scope=…` fetches a token from the realm (with the credentials, if any) and
caches it per scope until it expires.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lepton_ci.errors import RegistryError
from lepton_ci.forge.http import register_secret


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    source: str = ""
    identity_token: bool = False  # docker's `identitytoken`: a refresh token for the OAuth2 realm


def _config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _helper(helper: str, host: str, where: str) -> Credentials | None:
    """Ask `docker-credential-<helper> get` for the host's credentials (the docker credential protocol)."""
    exe = f"docker-credential-{helper}"
    try:
        proc = subprocess.run([exe, "get"], input=host, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise RegistryError(f"{where} names the credential helper {helper!r}, but {exe} is not on PATH") from None
    except subprocess.TimeoutExpired:
        raise RegistryError(f"credential helper {exe} did not answer within 30 s") from None
    if proc.returncode != 0:
        if "credentials not found" in (proc.stdout + proc.stderr).lower():
            return None
        raise RegistryError(f"credential helper {exe} failed for {host}: {proc.stderr.strip()[:200]}")
    try:
        data = json.loads(proc.stdout)
        user, secret = str(data["Username"]), str(data["Secret"])
    except (ValueError, KeyError, TypeError):
        raise RegistryError(f"credential helper {exe} answered something that is not its JSON") from None
    register_secret(secret)
    return Credentials(user, secret, f"credential helper {helper}", identity_token=user == "<token>")


def _host_keys(host: str) -> list[str]:
    keys = [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"]
    if host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        keys.append("https://index.docker.io/v1/")
    return keys


def from_docker_config(host: str) -> Credentials | None:
    path = _config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RegistryError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        config = json.loads(text)
        if not isinstance(config, dict):
            raise ValueError
    except ValueError:
        raise RegistryError(f"{path} is not a JSON object (the docker config)") from None
    helpers = config.get("credHelpers") or {}
    if isinstance(helpers, dict) and isinstance(helpers.get(host), str):
        return _helper(helpers[host], host, f"{path} credHelpers")
    auths = config.get("auths") or {}
    for key in _host_keys(host):
        entry = auths.get(key) if isinstance(auths, dict) else None
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("identitytoken"), str) and entry["identitytoken"]:
            register_secret(entry["identitytoken"])
            return Credentials("<token>", entry["identitytoken"], f"{path} ({key})", identity_token=True)
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, _, password = base64.b64decode(entry["auth"], validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise RegistryError(f"{path}: auths[{key!r}].auth is not base64 of user:password") from None
            register_secret(password)
            return Credentials(user, password, f"{path} ({key})")
    if isinstance(config.get("credsStore"), str) and config["credsStore"]:
        return _helper(config["credsStore"], host, f"{path} credsStore")
    return None


def find_credentials(host: str) -> Credentials | None:
    user, password = os.environ.get("LEPTON_REGISTRY_USER"), os.environ.get("LEPTON_REGISTRY_PASSWORD")
    if user or password:
        if not (user and password):
            missing = "LEPTON_REGISTRY_PASSWORD" if user else "LEPTON_REGISTRY_USER"
            raise RegistryError(f"LEPTON_REGISTRY_USER and LEPTON_REGISTRY_PASSWORD go together: {missing} is empty")
        register_secret(password)
        return Credentials(user, password, "LEPTON_REGISTRY_USER/LEPTON_REGISTRY_PASSWORD")
    return from_docker_config(host)


_PARAM_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",service="…",scope="…"` -> ("bearer", {...}); scheme lowercased."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)) for m in _PARAM_RE.finditer(rest)
    }
    return scheme.lower(), {k: v.replace('\\"', '"') for k, v in params.items()}


@dataclass
class TokenCache:
    """Bearer tokens per scope, dropped a little before they expire."""

    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)

    def get(self, scope: str) -> str | None:
        held = self.tokens.get(scope)
        if held and held[1] > time.monotonic():
            return held[0]
        return None

    def put(self, scope: str, token: str, expires_in: Any) -> None:
        life = expires_in if isinstance(expires_in, int | float) and expires_in > 0 else 60
        self.tokens[scope] = (token, time.monotonic() + max(10.0, float(life) - 10))


def basic_header(creds: Credentials) -> str:
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")
