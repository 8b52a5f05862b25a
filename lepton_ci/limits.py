"""Size limits for every file lepton-ci reads, and the one reader that enforces them.

lepton-ci reads files that other people write: a pull request's metrics files and lepton.yml, records
passed between CI jobs as artifacts. A file that is far larger than any real one is an attack or an
accident, and reading it whole would turn a one-line error into an out-of-memory kill of the CI job. So
each kind of file has a bound, checked before the content is held in memory (one byte past the bound is
read, never the rest), and exceeding it is a `UserError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from lepton_ci.errors import UserError

MiB = 1 << 20

CONFIG_MAX_BYTES = 1 * MiB
"""lepton.yml: real configs are a few kilobytes."""

METRICS_MAX_BYTES = 16 * MiB
"""One metrics file (JSON, YAML, TOML; also dvc.yaml)."""

METRICS_MAX_COUNT = 100_000
"""Numeric values in one metrics file, after flattening: far more than any gate compares. It bounds what a
small YAML file can expand to through aliases (yamlsafe allows up to a million nodes) and what every record
carrying the metrics costs to write, read and sign."""

RECORD_MAX_BYTES = 64 * MiB
"""One record (run.json, gate.json, deployment.json, a registry manifest)."""


def human_size(n: int) -> str:
    """`16 MiB`, `512 KiB`, `300 bytes`: limits are printed the way they are written above."""
    if n >= MiB and n % MiB == 0:
        return f"{n // MiB} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} bytes"


def too_large(what: str, limit: int, where: str) -> UserError:
    """The one wording of "this file is over its limit", shared by files on disk and blobs read from git."""
    return UserError(f"{what} is larger than the limit of {human_size(limit)}; refusing to read it", where=where)


def read_limited(path: str | os.PathLike[str], limit: int, what: str, display: str | None = None) -> bytes:
    """The bytes of `path`, or a UserError naming it when it holds more than `limit` bytes.

    Reads at most `limit + 1` bytes, so a huge file (or an endless one such as /dev/zero or a FIFO)
    costs no more memory than the limit. OSErrors other than "too large" propagate unchanged so callers
    keep their own wording for "not found" and "is a directory"."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise too_large(what, limit, display or str(Path(path)))
    return data
