"""Git access through the git binary: revision info and reading files at a revision.

Files at a revision are read through one `git cat-file --batch` process for all paths, which is what
keeps `metrics diff` fast on repositories with many metrics files.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from lepton_ci.errors import UserError

WORKSPACE = "workspace"


def _git(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError("git is not installed (needed to read revisions)") from None
    if check and proc.returncode != 0:
        raise UserError(f"git {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    return proc


def repo_root(cwd: Path) -> Path | None:
    proc = _git(["rev-parse", "--show-toplevel"], cwd, check=False)
    return Path(proc.stdout.strip()) if proc.returncode == 0 else None


def _strip_credentials(url: str) -> str:
    return re.sub(r"^(\w+://)[^@/]+@", r"\1", url)


def git_info(cwd: Path) -> dict[str, object]:
    """sha, ref, repo and dirty flag of the checkout at `cwd`; empty values outside a repo."""
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


def read_files_at(rev: str, paths: list[Path], cwd: Path) -> dict[Path, bytes | None]:
    """Contents of `paths` (absolute or relative to cwd) at `rev`; None where the revision lacks one.

    One `git cat-file --batch` process answers everything: the first request is the revision itself
    (so an unknown revision is told apart from a missing file), the rest are `REV:./PATH`, which git
    resolves against cwd. Each extra git process would cost a few milliseconds per call."""
    if "\n" in rev or any("\n" in str(p) for p in paths):
        raise UserError("git revisions and metrics paths must not contain line breaks")
    rel = [os.path.relpath(p if p.is_absolute() else cwd / p, cwd) for p in paths]
    request = f"{rev}^{{commit}}\n" + "".join(f"{rev}:./{r}\n" for r in rel)
    try:
        proc = subprocess.run(["git", "cat-file", "--batch"], cwd=cwd, input=request.encode(), capture_output=True)
    except FileNotFoundError:
        raise UserError("git is not installed (needed to read revisions)") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        if "not a git repository" in err:
            raise UserError(f"{cwd} is not inside a git repository; cannot read revision {rev!r}")
        m = re.search(r"'\./(.*)' is outside repository at '(.*)'", err)
        if m:
            raise UserError(f"{m.group(1)} is outside the git repository {m.group(2)}")
        raise UserError(f"git cat-file failed: {err.splitlines()[-1] if err else proc.returncode}")
    buf, pos = proc.stdout, 0
    answers: list[bytes | None] = []
    for _ in range(len(paths) + 1):
        end = buf.index(b"\n", pos)
        line = buf[pos:end]
        pos = end + 1
        # "<object> missing" / "<object> ambiguous" echo the request, which may hold spaces: test the end.
        if line.endswith((b" missing", b" ambiguous")):
            answers.append(None)
            continue
        _oid, kind, size = line.rsplit(b" ", 2)
        answers.append(buf[pos:pos + int(size)] if kind == b"blob" else b"" if kind == b"commit" else None)
        pos += int(size) + 1
    if answers[0] is None:
        raise UserError(f"unknown git revision {rev!r} (expected a branch, tag, commit or 'workspace')")
    return dict(zip(paths, answers[1:]))
