"""The CNCF distribution server (Debian's `docker-registry`) on loopback, for tests of the oci:// backend.

Each server has its own config and storage directory, listens on 127.0.0.1 only, and is stopped by PID.
With `htpasswd=True` it uses the registry's real htpasswd (bcrypt) basic auth. Under CI=true a missing
`docker-registry` binary fails the test instead of skipping it (scripts/deps/50-oci-registry.sh installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests

USER, PASSWORD = "lepton", "registry-test-password-1"


def registry_binary() -> str:
    exe = os.environ.get("LEPTON_DOCKER_REGISTRY") or shutil.which("docker-registry") or "/usr/bin/docker-registry"
    if not os.path.exists(exe):
        if os.environ.get("CI") == "true":
            pytest.fail(
                "docker-registry is missing (apt-get install docker-registry; scripts/test installs it as root)"
            )
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _htpasswd(path: Path) -> None:
    import bcrypt

    path.write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()}\n")


class RegistryServer:
    """`docker-registry serve` with a config of our own; `root` is its storage (tests may tamper with it)."""

    def __init__(
        self,
        directory: Path,
        *,
        htpasswd: bool = False,
        token_auth: str = "",
        port: int | None = None,
        drain_s: int = 0,
    ) -> None:
        """`token_auth`: the `auth: token:` section of a TokenService (tests/support/oci_token.py).
        `drain_s`: on SIGTERM, finish the requests in flight for up to this long (`http.draintimeout`), as a
        registry restarted by its service manager does; 0 stops at once, possibly mid-write."""
        self.dir = Path(directory)
        self.token_auth = token_auth
        self.drain_s = drain_s
        self.root = self.dir / "storage"
        self.port = port or free_port()
        self.htpasswd = htpasswd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, repo: str = "team/models") -> str:
        return f"oci://{self.host}/{repo}"

    def config(self) -> str:
        auth = self.token_auth
        if self.htpasswd:
            _htpasswd(self.dir / "htpasswd")
            auth = f"auth:\n  htpasswd:\n    realm: lepton-test\n    path: {self.dir / 'htpasswd'}\n"
        return (
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root}\n  delete:\n    enabled: true\n"
            "  cache:\n    blobdescriptor: ''\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n  secret: lepton-test-secret\n"
            + (f"  draintimeout: {self.drain_s}s\n" if self.drain_s else "")
            + auth
        )

    def start(self) -> RegistryServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(exist_ok=True)
        cfg = self.dir / "config.yml"
        cfg.write_text(self.config())
        log = open(self.dir / "registry.log", "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen([registry_binary(), "serve", str(cfg)], stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {(self.dir / 'registry.log').read_text()[-2000:]}")
            try:
                requests.get(f"http://{self.host}/v2/", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not start within 15 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def blob_path(self, digest_hex: str) -> Path:
        return self.root / "docker/registry/v2/blobs/sha256" / digest_hex[:2] / digest_hex / "data"

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
