"""Git access through the git binary: revision info and reading files at a revision.

Files at a revision are read through one `git cat-file --batch` process for all paths (and for the
config that names them), which is what keeps `metrics diff` fast on repositories with many metrics files.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from lepton_ci.errors import UserError
from lepton_ci.limits import METRICS_MAX_BYTES, too_large

WORKSPACE = "workspace"


def _git(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError("git is not installed (needed to read revisions)") from None
    if check and proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode
        raise UserError(f"git {' '.join(args)} failed: {last}")
    return proc


def repo_root(cwd: Path) -> Path | None:
    proc = _git(["rev-parse", "--show-toplevel"], cwd, check=False)
    return Path(proc.stdout.strip()) if proc.returncode == 0 else None


def _strip_credentials(url: str) -> str:
    return re.sub(r"^(\w+://)[^@/]+@", r"\1", url)


def ci_git_info(env: Mapping[str, str] | None = None) -> dict[str, object]:
    """What the CI says it checked out, for images without git (GitLab's runner clones with its own helper
    image, so a job image such as python:3.12-slim has the checkout but no git binary). `dirty` is unknown
    (None): only git could tell."""
    env = os.environ if env is None else env
    sha = env.get("CI_COMMIT_SHA") or env.get("GITHUB_SHA") or None
    ref = env.get("GITHUB_HEAD_REF") or env.get("CI_COMMIT_REF_NAME") or env.get("GITHUB_REF_NAME") or None
    repo = env.get("CI_PROJECT_URL") or None
    if not repo and env.get("GITHUB_REPOSITORY"):
        repo = f"{env.get('GITHUB_SERVER_URL') or 'https://github.com'}/{env['GITHUB_REPOSITORY']}"
    return {"sha": sha, "ref": ref, "repo": _strip_credentials(repo) if repo else None, "dirty": None}


def git_info(cwd: Path) -> dict[str, object]:
    """sha, ref, repo and dirty flag of the checkout at `cwd`; empty values outside a repo.

    Without a git binary the CI's own variables answer (see `ci_git_info`): recording a run must not
    depend on a tool only revision reads (`git:REF` baselines, `metrics diff`) really need."""
    if shutil.which("git") is None:
        return ci_git_info()
    if repo_root(cwd) is None:
        return {"sha": None, "ref": None, "repo": None, "dirty": None}
    head = _git(["rev-parse", "--verify", "--quiet", "HEAD"], cwd, check=False)
    sha = head.stdout.strip() if head.returncode == 0 else None
    ref = os.environ.get("GITHUB_HEAD_REF") or os.environ.get("CI_COMMIT_REF_NAME")
    if not ref:
        ref = _git(["symbolic-ref", "--short", "-q", "HEAD"], cwd, check=False).stdout.strip() or None
    remote = _git(["config", "--get", "remote.origin.url"], cwd, check=False).stdout.strip()
    dirty = bool(_git(["status", "--porcelain", "--untracked-files=no"], cwd, check=False).stdout.strip())
    return {"sha": sha, "ref": ref, "repo": _strip_credentials(remote) if remote else None, "dirty": dirty}


class BlobReader:
    """One `git cat-file --batch` process for one revision, asked one object at a time.

    Answers are read as they come (git flushes after each object), so a caller can read lepton.yml at a
    revision, learn from it which metrics files to read, and read those from the same process: one git
    process per revision however the reads are split. Each blob's size is in git's header line, so a
    blob over `limit` is skipped without being held in memory and reported as too large."""

    def __init__(self, rev: str, cwd: Path) -> None:
        if "\n" in rev:
            raise UserError("git revisions must not contain line breaks")
        self.rev, self.cwd = rev, cwd
        try:
            self._proc = subprocess.Popen(
                ["git", "cat-file", "--batch"],
                cwd=cwd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except FileNotFoundError:
            raise UserError("git is not installed (needed to read revisions)") from None
        try:
            # The revision itself first, so an unknown revision is told apart from a missing file.
            if self._request(f"{rev}^{{commit}}", None, "") is None:
                raise UserError(f"unknown git revision {rev!r} (expected a branch, tag, commit or 'workspace')")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closing both pipes ends git even if it is blocked writing an answer nobody will read."""
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        self._proc.wait()

    def _failed(self) -> UserError:
        """git died (not a repository, a path outside it): its stderr says why."""
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
        except (OSError, ValueError):
            pass
        assert self._proc.stderr is not None
        err = self._proc.stderr.read().decode(errors="replace").strip()
        code = self._proc.wait()
        if "not a git repository" in err:
            return UserError(f"{self.cwd} is not inside a git repository; cannot read revision {self.rev!r}")
        m = re.search(r"'\./(.*)' is outside repository at '(.*)'", err)
        if m:
            return UserError(f"{m.group(1)} is outside the git repository {m.group(2)}")
        return UserError(f"git cat-file failed: {err.splitlines()[-1] if err else code}")

    def _request(self, spec: str, limit: int | None, what: str) -> bytes | None:
        stdin, stdout = self._proc.stdin, self._proc.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(os.fsencode(spec) + b"\n")
            stdin.flush()
        except (BrokenPipeError, ValueError):
            raise self._failed() from None
        header = stdout.readline()
        if not header.endswith(b"\n"):
            raise self._failed()
        header = header[:-1]
        # "<object> missing" / "<object> ambiguous" echo the request, which may hold spaces: test the end.
        if header.endswith((b" missing", b" ambiguous")):
            return None
        _oid, kind, size_text = header.rsplit(b" ", 2)
        size = int(size_text)
        if limit is not None and kind == b"blob" and size > limit:
            left = size + 1
            while left:
                chunk = stdout.read(min(left, 1 << 20))
                if not chunk:
                    raise self._failed()
                left -= len(chunk)
            raise too_large(what, limit, spec)
        body = stdout.read(size)
        stdout.read(1)  # the newline after each object
        if len(body) != size:
            raise self._failed()
        return body if kind == b"blob" else b"" if kind == b"commit" else None

    def read(
        self, paths: list[Path], *, limit: int | None = METRICS_MAX_BYTES, what: str = "metrics file"
    ) -> dict[Path, bytes | None]:
        """Contents of `paths` (absolute or relative to cwd) at the revision; None where it lacks one
        (or where the path is a directory). `REV:./PATH` makes git resolve PATH against cwd."""
        if any("\n" in str(p) for p in paths):
            raise UserError("git revisions and metrics paths must not contain line breaks")
        out: dict[Path, bytes | None] = {}
        for p in paths:
            rel = os.path.relpath(p if p.is_absolute() else self.cwd / p, self.cwd)
            out[p] = self._request(f"{self.rev}:./{rel}", limit, what)
        return out


def read_files_at(
    rev: str, paths: list[Path], cwd: Path, *, limit: int | None = METRICS_MAX_BYTES, what: str = "metrics file"
) -> dict[Path, bytes | None]:
    """Contents of `paths` (absolute or relative to cwd) at `rev`; None where the revision lacks one.

    One `git cat-file --batch` process answers everything (each extra git process would cost a few
    milliseconds per call). A blob larger than `limit` is a UserError naming `REV:./PATH`."""
    if "\n" in rev or any("\n" in str(p) for p in paths):
        raise UserError("git revisions and metrics paths must not contain line breaks")
    with BlobReader(rev, cwd) as reader:
        return reader.read(paths, limit=limit, what=what)
