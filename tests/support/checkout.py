"""A clean copy of this checkout, git with a fixed identity, and the environment a job on the host gets: the
helpers the end-to-end tests of the CI runners (act, the runner images, the release workflow) share.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def git(repo: Path, *args: str) -> str:
    """`git ARGS` in `repo` as user CI, default branch main; returns stdout, stripped (fails on an error)."""
    return subprocess.run(
        ["git", "-c", "user.name=CI", "-c", "user.email=ci@example.com", "-c", "init.defaultBranch=main", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()


def copy_checkout(dest: Path) -> Path:
    """What a clone of this repository holds: tracked and unignored files (no .venv, no caches, no builds)."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def host_job_env(passthrough: re.Pattern[str]) -> dict[str, str]:
    """The environment for a runner that runs jobs on the host (act `-self-hosted`): only the variables
    `passthrough` matches (nothing of the machine's own CI), and PATH without this test's venv, so jobs
    find the system `python3`, as on a runner."""
    env = {k: v for k, v in os.environ.items() if passthrough.match(k)}
    env["PATH"] = os.pathsep.join(
        p
        for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
        if p and not p.startswith(sys.prefix + os.sep)
    )
    return env
