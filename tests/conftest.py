"""Shared fixtures: a real temporary git repository, and the signing-key environment."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.keys import PRIVATE_PEM
from tests.support.serving_base import serving_base  # noqa: F401 (a session fixture: one full image build)

SIGNING_KEY = PRIVATE_PEM


class GitRepo:
    """A throwaway git repository with an identity configured; `commit` writes files and commits them."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def git(self, *args: str) -> str:
        return subprocess.run(["git", *args], cwd=self.path, check=True, capture_output=True, text=True).stdout

    def write(self, files: dict[str, str | bytes]) -> None:
        for rel, content in files.items():
            p = self.path / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content.encode() if isinstance(content, str) else content)

    def commit(self, files: dict[str, str | bytes] | None = None, message: str = "commit",
               remove: tuple[str, ...] = ()) -> str:
        """Write `files`, delete `remove`, commit everything; returns the new commit sha."""
        self.write(files or {})
        for rel in remove:
            self.git("rm", "-q", rel)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD").strip()


@pytest.fixture()
def git_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GitRepo:
    # Keep the user's and the system's git config out of the tests.
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig-global"))
    path = tmp_path / "repo"
    path.mkdir()
    repo = GitRepo(path)
    repo.git("init", "-q", "-b", "main")
    repo.git("config", "user.name", "Lepton Test")
    repo.git("config", "user.email", "test@lepton-ci.invalid")
    repo.git("config", "commit.gpgsign", "false")
    return repo


@pytest.fixture()
def signing_key(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """LEPTON_CI_SIGNING_KEY set to the test private key (PEM); returns it as bytes."""
    monkeypatch.setenv("LEPTON_CI_SIGNING_KEY", SIGNING_KEY)
    return SIGNING_KEY.encode()


@pytest.fixture()
def no_signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEPTON_CI_SIGNING_KEY", raising=False)
