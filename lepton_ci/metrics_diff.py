"""Metrics of the same files at two revisions (or the workspace), read in one git call per revision."""

from __future__ import annotations

from pathlib import Path

from lepton_ci.errors import UserError
from lepton_ci.gitio import WORKSPACE, read_files_at
from lepton_ci.metrics import MetricsDiff, Number, diff_metrics, parse_metrics


def read_revision(rev: str, files: list[str], base: Path, notes: list[str]) -> dict[str, dict[str, Number] | None]:
    """Flat metrics per file at `rev`; a file that is missing or unreadable there becomes None plus a note."""
    paths = [Path(f) for f in files]
    if rev == WORKSPACE:
        contents: dict[Path, bytes | None] = {}
        for p in paths:
            full = p if p.is_absolute() else base / p
            contents[p] = full.read_bytes() if full.is_file() else None
    else:
        at_rev = read_files_at(rev, [p if p.is_absolute() else base / p for p in paths], base)
        contents = {p: at_rev[p if p.is_absolute() else base / p] for p in paths}
    out: dict[str, dict[str, Number] | None] = {}
    for f, p in zip(files, paths):
        blob = contents[p]
        if blob is None:
            notes.append(f"{f}: missing at {rev}")
            out[f] = None
            continue
        try:
            out[f] = parse_metrics(blob, f)
        except UserError as exc:
            notes.append(f"{rev}: {exc}")
            out[f] = None
    return out


def diff_revisions(a: str, b: str, files: list[str], base: Path) -> MetricsDiff:
    notes: list[str] = []
    old = read_revision(a, files, base, notes)
    new = read_revision(b, files, base, notes)
    return diff_metrics(a, old, b, new, notes)
