"""Metrics files: load (JSON, YAML 1.2, TOML), flatten nested keys with dots, diff, format.

Flat `{"eval.accuracy": 0.93}` is the one shape every record and rule uses. Only numbers are
metrics; strings and booleans in a metrics file are ignored rather than guessed at.

A value that cannot be a metric (NaN, an infinity, an integer too large for a float) is skipped with a
note naming the metric and the file, and the file's other metrics still count: one bad value used to
hide a whole file, and an oversized integer used to surface later as an OverflowError. Two keys that
flatten to the same name (`{"a.b": 1, "a": {"b": 2}}`) also get a note (the later one is kept). The
notes travel with the values (`ParsedMetrics`) so each caller can show them where its user looks:
`metrics diff` prints them under the table, `train` stores them in the run record and warns on stderr.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lepton_ci.errors import UserError
from lepton_ci.fsutil import has_lone_surrogate, short_repr
from lepton_ci.limits import METRICS_MAX_BYTES, METRICS_MAX_COUNT, read_limited, too_large

Number = int | float
FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml"}
_FLOAT_MAX = sys.float_info.max


class TooManyMetrics(ValueError):
    """More numeric values than `flatten(limit=...)` allows."""


def flatten(
    obj: Any,
    prefix: str = "",
    out: dict[str, Number] | None = None,
    collisions: list[str] | None = None,
    limit: int | None = None,
) -> dict[str, Number]:
    """Nested mappings and lists to one level, keys joined with dots. Iterative with exact type checks:
    it runs over every value of every metrics file, and recursion with isinstance first was a third of
    the time of `metrics diff` on large files. With `collisions`, each flat name set twice (a dotted key
    and a nested one) is appended to it; the later value wins. With `limit`, finding more than that many
    flat metrics raises `TooManyMetrics` at once."""
    out = {} if out is None else out
    most = sys.maxsize if limit is None else limit
    stack: list[tuple[str, Any]] = [(prefix, obj)]
    pop, push = stack.pop, stack.append
    while stack:
        name, value = pop()
        kind = type(value)
        if kind is float or kind is int or (kind is not bool and isinstance(value, (int, float))):
            if collisions is not None and name in out:
                collisions.append(name)
            out[name] = value
            if len(out) > most:
                raise TooManyMetrics(most)
        elif isinstance(value, dict):
            for key, item in reversed(list(value.items())):
                push((f"{name}.{key}" if name else str(key), item))
        elif isinstance(value, list):
            for i in range(len(value) - 1, -1, -1):
                push((f"{name}.{i}" if name else str(i), value[i]))
    return out


@dataclass(frozen=True)
class ParsedMetrics:
    """One metrics file's flat numeric values, and the notes about what was skipped or ambiguous.

    Each note names the file (the `source` label given to `parse_metrics`) and the metric."""

    values: dict[str, Number]
    notes: tuple[str, ...] = ()


def parse_metrics(text: str | bytes, source: str, filename: str | None = None) -> ParsedMetrics:
    """Parse and flatten one metrics file's content; the format comes from the file extension.

    Errors that make the whole file unusable (unsupported type, malformed, not a mapping, over the size
    limit) raise UserError naming `source`; problems with single values become notes."""
    fmt = FORMATS.get(Path(filename or source).suffix.lower())
    if fmt is None:
        raise UserError(f"unsupported metrics file type (expected one of: {', '.join(FORMATS)})", where=source)
    if len(text) > METRICS_MAX_BYTES:
        raise too_large("metrics file", METRICS_MAX_BYTES, source)
    try:
        if fmt == "json":
            if isinstance(text, bytes):  # strictly: json.loads(bytes) would let encoded surrogates through
                text = text.decode(json.detect_encoding(text))
            data = json.loads(text)  # NaN/Infinity parse, then are skipped below with a note
        elif fmt == "yaml":
            from lepton_ci.yamlsafe import YamlError, YamlLimitError, load

            try:
                data = load(text, source, yaml12=True)
            except YamlLimitError:
                raise
            except YamlError as exc:
                raise UserError(f"malformed YAML metrics: {_clip(exc.problem)}", where=source) from None
        else:
            import tomllib

            data = tomllib.loads(text.decode() if isinstance(text, bytes) else text)
    except UserError:
        raise
    except UnicodeDecodeError:
        raise UserError("metrics file is not UTF-8 text", where=source) from None
    except ValueError as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"malformed {fmt.upper()} metrics: {_clip(first)}", where=source) from None
    except RecursionError:  # json.loads of thousands of nested brackets
        raise UserError(f"malformed {fmt.upper()} metrics: nested too deeply", where=source) from None
    if not isinstance(data, dict):
        raise UserError("a metrics file must hold a mapping of names to numbers", where=source)
    collisions: list[str] = []
    try:
        flat = flatten(data, collisions=collisions, limit=METRICS_MAX_COUNT)
    except TooManyMetrics:
        raise UserError(
            f"metrics file holds more than {METRICS_MAX_COUNT:,} metrics; refusing to use it", where=source
        ) from None
    _refuse_lone_surrogates(flat, source)
    notes = [
        f"{source}: metric {short_repr(key)} is given twice (a dotted key and a nested one); the later value is used"
        for key in dict.fromkeys(collisions)
    ]
    bad = [
        key
        for key, value in flat.items()
        if (type(value) is float and not math.isfinite(value)) or (type(value) is not float and abs(value) > _FLOAT_MAX)
    ]
    for key in bad:
        value = flat.pop(key)
        why = (
            f"is {value}"
            if isinstance(value, float)
            else f"is an integer too large for a float ({len(str(abs(value)))} digits)"
        )
        notes.append(f"{source}: metric {short_repr(key)} {why}; skipped (metrics must be finite numbers)")
    return ParsedMetrics(flat, tuple(notes))


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _refuse_lone_surrogates(flat: dict[str, Number], source: str) -> None:
    """A metric name must be Unicode text: a `"\\ud800"` escape in JSON or YAML (or a surrogate in a str
    given to `parse_metrics`) parses, then fails every record that carries it when that is written."""
    names = "".join(flat)
    if names.isascii():
        return
    try:
        names.encode("utf-8")
    except UnicodeEncodeError:
        bad = next(key for key in flat if has_lone_surrogate(key))
        raise UserError(
            f"metric name {short_repr(bad)} is not Unicode text (it holds a lone surrogate)", where=source
        ) from None


def load_metrics_file(path: str | Path, display: str | None = None) -> ParsedMetrics:
    """Read (at most METRICS_MAX_BYTES) and parse one metrics file on disk; errors name `display`."""
    p = Path(path)
    name = display or str(p)
    try:
        data = read_limited(p, METRICS_MAX_BYTES, "metrics file", name)
    except FileNotFoundError:
        raise UserError("metrics file not found", where=name) from None
    except IsADirectoryError:
        raise UserError("metrics path is a directory, expected a file", where=name) from None
    except OSError as exc:
        raise UserError(f"cannot read metrics file: {exc.strerror}", where=name) from None
    return parse_metrics(data, name, p.name)


# --- diff -------------------------------------------------------------------------------------------


@dataclass
class MetricChange:
    path: str
    metric: str
    old: Number | None
    new: Number | None

    @property
    def diff(self) -> Number | None:
        if self.old is None or self.new is None:
            return None
        return self.new - self.old

    @property
    def pct(self) -> float | None:
        d = self.diff
        if d is None or self.old is None or self.old == 0:
            return None
        return d / abs(self.old) * 100.0

    @property
    def changed(self) -> bool:
        return self.old != self.new


@dataclass
class MetricsDiff:
    a: str
    b: str
    changes: list[MetricChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def visible(self, show_all: bool) -> list[MetricChange]:
        return [c for c in self.changes if show_all or c.changed]

    def to_json(self, show_all: bool = False, precision: int | None = None) -> dict[str, Any]:
        def r(x: Number | None) -> Number | None:
            return x if x is None or precision is None else round(x, precision)

        files: dict[str, dict[str, Any]] = {}
        for c in self.visible(show_all):
            files.setdefault(c.path, {})[c.metric] = {
                "old": c.old,
                "new": c.new,
                "diff": r(c.diff),
                "pct": r(c.pct),
            }
        return {"a": self.a, "b": self.b, "files": files, "notes": list(self.notes)}


def diff_metrics(
    a_label: str,
    a: dict[str, dict[str, Number] | None],
    b_label: str,
    b: dict[str, dict[str, Number] | None],
    notes: Iterable[str] = (),
) -> MetricsDiff:
    """Compare per-file flat metrics. None for a file means that side lacks it (the caller notes why)."""
    result = MetricsDiff(a_label, b_label, notes=list(notes))
    for path in sorted(set(a) | set(b)):
        old, new = a.get(path) or {}, b.get(path) or {}
        for metric in sorted(set(old) | set(new)):
            result.changes.append(MetricChange(path, metric, old.get(metric), new.get(metric)))
    return result


# --- formatting ---------------------------------------------------------------------------------------


def fmt_number(x: Number | None, precision: int) -> str:
    """Fixed-point with trailing zeros dropped; scientific only for very large or tiny values."""
    if x is None:
        return "—"
    if isinstance(x, int):
        return str(x)
    if x != 0 and not (10**-precision <= abs(x) < 10**precision):
        return f"{x:.{precision}g}"
    text = f"{x:.{precision}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def fmt_change(c: MetricChange, precision: int) -> tuple[str, str]:
    d = c.diff
    if d is None:
        return ("—", "—")
    sign = "+" if d > 0 else ""
    pct = c.pct
    pct_s = "—" if pct is None else f"{'+' if pct > 0 else ''}{pct:.2f}%"
    return (f"{sign}{fmt_number(d, precision)}", pct_s)


def _rows(d: MetricsDiff, show_all: bool, precision: int) -> list[list[str]]:
    rows = []
    for c in d.visible(show_all):
        change, pct = fmt_change(c, precision)
        rows.append([c.path, c.metric, fmt_number(c.old, precision), fmt_number(c.new, precision), change, pct])
    return rows


def format_table(d: MetricsDiff, show_all: bool = False, precision: int = 5) -> str:
    header = ["Path", "Metric", d.a, d.b, "Change", "Change %"]
    rows = _rows(d, show_all, precision)
    lines = []
    if rows:
        widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
        for r in [header] + rows:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    else:
        lines.append("No metric changed." if not show_all else "No metrics found.")
    lines += [f"note: {n}" for n in d.notes]
    return "\n".join(lines)


def format_markdown(d: MetricsDiff, show_all: bool = False, precision: int = 5) -> str:
    header = ["Path", "Metric", f"`{d.a}`", f"`{d.b}`", "Change", "Change %"]
    rows = _rows(d, show_all, precision)
    lines = []
    if rows:
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---", "---", "---:", "---:", "---:", "---:"]) + "|")
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in rows]
    else:
        lines.append("_No metric changed._" if not show_all else "_No metrics found._")
    if d.notes:
        lines.append("")
        lines += [f"> {n}" for n in d.notes]
    return "\n".join(lines)
