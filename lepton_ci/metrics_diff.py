"""Metrics of two revisions (or a revision and the workspace), read with one git process per revision.

Which files: explicit targets at both sides; otherwise each side's own list, the way DVC reads dvc.yaml
at each revision: `train.metrics` of lepton.yml as it is at that revision, or, where that revision has
no lepton.yml, the metrics a dvc.yaml there declares (so a DVC project needs no config to switch). A
renamed metrics file therefore shows as removed on one side and added on the other.

The git reads run on threads while the workspace side is parsed (the child process does its work
outside the GIL), and content that is identical on both sides is parsed once: `metrics diff` is a
command people run in a loop, and it is mostly start-up, git and parsing."""

from __future__ import annotations

import os
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lepton_ci.errors import UserError
from lepton_ci.gitio import WORKSPACE, BlobReader
from lepton_ci.limits import CONFIG_MAX_BYTES, METRICS_MAX_BYTES, read_limited
from lepton_ci.metrics import MetricsDiff, Number, ParsedMetrics, diff_metrics, parse_metrics
from lepton_ci.yamlsafe import YamlLimitError

Contents = dict[str, bytes | None]
CONFIG_NAME = "lepton.yml"
DVC_NAME = "dvc.yaml"


def normalize(path: str) -> str:
    """The one spelling of a metrics path: `./m.json`, `m.json` and `sub/../m.json` are one file, so
    they are compared (and shown) once."""
    if os.sep != "/":
        path = path.replace(os.sep, "/")
    return posixpath.normpath(path)


def _dvc_entry(entry: Any, source: str) -> str:
    """A dvc.yaml metrics entry: a path, or a one-key mapping `{path: {cache: false}}`."""
    if isinstance(entry, str) and entry:
        return entry
    if isinstance(entry, dict) and len(entry) == 1 and isinstance(next(iter(entry)), str):
        return next(iter(entry))
    raise UserError(f"a metrics entry must be a path or a one-key mapping, got {entry!r}", where=source)


def metrics_in_dvc_yaml(text: bytes, source: str) -> tuple[list[str], list[str]]:
    """(metrics paths, notes) declared in a dvc.yaml: top-level `metrics:` and each stage's `metrics:`
    (relative to the stage's `wdir`). Templated paths (`${...}`) are skipped with a note."""
    from lepton_ci.yamlsafe import YamlError, YamlLimitError, load

    try:
        data = load(text, source, yaml12=True)
    except YamlLimitError:
        raise
    except YamlError as exc:
        raise UserError(f"not valid YAML: {exc.problem}", where=source) from None
    if data is None:
        return [], []
    if not isinstance(data, dict):
        raise UserError("expected a mapping at the top level", where=source)
    found: list[str] = []
    for entry in data.get("metrics") or []:
        found.append(_dvc_entry(entry, source))
    stages = data.get("stages") or {}
    for stage in stages.values() if isinstance(stages, dict) else []:
        if not isinstance(stage, dict):
            continue
        wdir = stage.get("wdir")
        if not isinstance(wdir, str):
            wdir = "."
        for entry in stage.get("metrics") or []:
            found.append(posixpath.join(wdir, _dvc_entry(entry, source)))
    notes = [f"{source}: skipped templated metrics path {p!r}" for p in found if "${" in p]
    return [normalize(p) for p in found if "${" not in p], notes


def metrics_in_config(text: bytes, source: str) -> list[str]:
    """`train.metrics` of a lepton.yml at some revision. Only that key is read: an old revision's config
    need not pass today's schema for its metrics files to be compared."""
    from lepton_ci.yamlsafe import YamlError, YamlLimitError, load

    try:
        data = load(text, source, yaml12=False)  # lepton.yml's rules, the same bounded loader
    except YamlLimitError:
        raise
    except YamlError as exc:
        raise UserError(f"not valid YAML: {exc.problem}", where=source) from None
    train = data.get("train") if isinstance(data, dict) else None
    listed = train.get("metrics") if isinstance(train, dict) else None
    if listed is None:
        return []
    if not isinstance(listed, list) or not all(isinstance(f, str) and f for f in listed):
        raise UserError("train.metrics must be a list of file names", where=source)
    return [normalize(f) for f in listed]


@dataclass
class Side:
    """What one revision contributes: its metrics files and their bytes (None: missing there)."""

    rev: str
    contents: Contents = field(default_factory=dict)
    source: str = ""  # where the list came from ("" when given explicitly)
    notes: list[str] = field(default_factory=list)


def _listing(rev: str, base: Path, config_name: str, read: Any) -> tuple[list[str], str, list[str]]:
    """(files, which file listed them, notes) at `rev`; `read(name, limit, what)` gives bytes or None."""
    label = f"{rev}:{config_name}" if rev != WORKSPACE else config_name
    text = read(config_name, CONFIG_MAX_BYTES, "config file")
    if text is not None:
        try:
            return metrics_in_config(text, label), config_name, []
        except YamlLimitError:
            raise
        except UserError as exc:
            return [], config_name, [f"{rev}: {exc}"]
    dvc_label = f"{rev}:{DVC_NAME}" if rev != WORKSPACE else DVC_NAME
    text = read(DVC_NAME, METRICS_MAX_BYTES, "dvc.yaml")
    if text is None:
        return [], "", [f"{rev}: no {config_name} or {DVC_NAME}, so no metrics files"]
    try:
        files, notes = metrics_in_dvc_yaml(text, dvc_label)
        return files, DVC_NAME, notes
    except YamlLimitError:
        raise
    except UserError as exc:
        return [], DVC_NAME, [f"{rev}: {exc}"]


def read_side(rev: str, files: list[str] | None, base: Path, config_name: str = CONFIG_NAME) -> Side:
    """Bytes of each metrics file at `rev` (or in the workspace). With `files` None the list is the one
    `rev` itself declares. One git process per revision, whatever is read."""
    side = Side(rev)
    if rev == WORKSPACE:

        def read(name: str, limit: int, what: str) -> bytes | None:
            p = Path(name) if Path(name).is_absolute() else base / name
            if not p.is_file():
                return None
            try:
                return read_limited(p, limit, what, name)
            except OSError as exc:
                raise UserError(f"cannot read {what}: {exc.strerror}", where=name) from None

        if files is None:
            files, side.source, side.notes = _listing(rev, base, config_name, read)
        side.contents = {f: read(f, METRICS_MAX_BYTES, "metrics file") for f in files}
        return side
    with BlobReader(rev, base) as reader:

        def read_at(name: str, limit: int, what: str) -> bytes | None:
            return reader.read([Path(name)], limit=limit, what=what)[Path(name)]

        if files is None:
            files, side.source, side.notes = _listing(rev, base, config_name, read_at)
        at_rev = reader.read([Path(f) for f in files])
    side.contents = {f: at_rev[Path(f)] for f in files}
    return side


def parse_side(
    side: Side, other: Side, parsed: dict[tuple[str, bytes], ParsedMetrics]
) -> dict[str, dict[str, Number] | None]:
    """Flat metrics per file; a missing, unlisted or unreadable file becomes None plus a note. `parsed`
    memoizes by (file, content) so the other side's identical files cost nothing (their notes repeat)."""
    out: dict[str, dict[str, Number] | None] = {}
    notes = side.notes
    for f in list(side.contents) + [f for f in other.contents if f not in side.contents]:
        blob = side.contents.get(f)
        if f not in side.contents:
            notes.append(
                f"{f}: not listed in {side.source} at {side.rev}" if side.source else f"{f}: not listed at {side.rev}"
            )
            out[f] = None
            continue
        if blob is None:
            notes.append(f"{f}: missing at {side.rev}")
            out[f] = None
            continue
        key = (f, blob)
        result = parsed.get(key)
        if result is None:
            try:
                result = parsed[key] = parse_metrics(blob, f)
            except YamlLimitError as exc:  # a bomb is refused outright, not noted: fail closed
                raise UserError(f"{exc.message} (at {side.rev})", where=exc.where) from None
            except UserError as exc:
                notes.append(f"{side.rev}: {exc}")
                out[f] = None
                continue
        out[f] = result.values
        notes.extend(f"{side.rev}: {n}" for n in result.notes)
    return out


def diff_revisions(
    a: str, b: str, files: list[str] | None, base: Path, *, config_name: str = CONFIG_NAME
) -> MetricsDiff:
    """Compare the metrics files of revisions `a` and `b` (`workspace` for the files on disk).

    `files`: the same explicit list at both sides; None: each side's own list from `config_name` (else
    dvc.yaml) as it is at that side. Paths are relative to `base`."""
    if files is not None:
        files = list(dict.fromkeys(normalize(f) for f in files))  # a file named twice is compared once
    sides: dict[str, Side] = {}
    parsed: dict[tuple[str, bytes], ParsedMetrics] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = {
            rev: pool.submit(read_side, rev, files, base, config_name)
            for rev in dict.fromkeys((a, b))
            if rev != WORKSPACE
        }
        if WORKSPACE in (a, b):
            sides[WORKSPACE] = read_side(WORKSPACE, files, base, config_name)
            _preparse(sides[WORKSPACE], parsed)  # while git works
        for rev, future in pending.items():
            sides[rev] = future.result()
    side_a, side_b = sides[a], sides[b]
    metrics_a = parse_side(side_a, side_b, parsed)
    if a == b:
        return diff_metrics(a, metrics_a, b, metrics_a, side_a.notes)
    metrics_b = parse_side(side_b, side_a, parsed)
    return diff_metrics(a, metrics_a, b, metrics_b, side_a.notes + side_b.notes)


def _preparse(side: Side, parsed: dict[tuple[str, bytes], ParsedMetrics]) -> None:
    """Fill the memo with this side's parses; errors are left for `parse_side` to turn into notes."""
    for f, blob in side.contents.items():
        if blob is not None and (f, blob) not in parsed:
            try:
                parsed[(f, blob)] = parse_metrics(blob, f)
            except YamlLimitError:
                raise
            except UserError:
                pass
