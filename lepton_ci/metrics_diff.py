"""Metrics of the same files at two revisions (or the workspace), read in one git call per revision.

The git reads run on threads while the workspace side is parsed (the child process does its work
outside the GIL), and content that is identical on both sides is parsed once: `metrics diff` is a
command people run in a loop, and it is mostly start-up, git and parsing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lepton_ci.errors import UserError
from lepton_ci.gitio import WORKSPACE, read_files_at
from lepton_ci.metrics import MetricsDiff, Number, diff_metrics, parse_metrics

Contents = dict[str, bytes | None]


def read_contents(rev: str, files: list[str], base: Path) -> Contents:
    """Raw bytes of each file at `rev` (or in the workspace); None where it is missing."""
    paths = [Path(f) for f in files]
    full = [p if p.is_absolute() else base / p for p in paths]
    if rev == WORKSPACE:
        return {f: p.read_bytes() if p.is_file() else None for f, p in zip(files, full)}
    at_rev = read_files_at(rev, full, base)
    return {f: at_rev[p] for f, p in zip(files, full)}


def parse_contents(rev: str, contents: Contents, notes: list[str],
                   parsed: dict[tuple[str, bytes], dict[str, Number]]) -> dict[str, dict[str, Number] | None]:
    """Flat metrics per file; a missing or unreadable file becomes None plus a note. `parsed` memoizes
    by (file, content) so the other side's identical files cost nothing."""
    out: dict[str, dict[str, Number] | None] = {}
    for f, blob in contents.items():
        if blob is None:
            notes.append(f"{f}: missing at {rev}")
            out[f] = None
            continue
        key = (f, blob)
        if key in parsed:
            out[f] = parsed[key]
            continue
        try:
            out[f] = parsed[key] = parse_metrics(blob, f)
        except UserError as exc:
            notes.append(f"{rev}: {exc}")
            out[f] = None
    return out


def diff_revisions(a: str, b: str, files: list[str], base: Path) -> MetricsDiff:
    files = list(dict.fromkeys(files))  # a file named twice is compared once
    notes: dict[str, list[str]] = {a: [], b: []}
    parsed: dict[tuple[str, bytes], dict[str, Number]] = {}
    metrics: dict[str, dict[str, dict[str, Number] | None]] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = {rev: pool.submit(read_contents, rev, files, base) for rev in notes if rev != WORKSPACE}
        if WORKSPACE in notes:  # parsed while git works
            metrics[WORKSPACE] = parse_contents(WORKSPACE, read_contents(WORKSPACE, files, base), notes[WORKSPACE], parsed)
        for rev, future in pending.items():
            metrics[rev] = parse_contents(rev, future.result(), notes[rev], parsed)
    return diff_metrics(a, metrics[a], b, metrics[b], notes[a] + notes[b])
