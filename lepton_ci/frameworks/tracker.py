"""Metric logging from inside a training loop, cheap enough to call every step.

`lepton_ci.log_metrics` (lepton_ci/tracking.py) takes a file lock and rewrites a JSON file on every call:
right for a handful of final metrics, far too slow for a per-batch loss (hundreds of microseconds). A
`Tracker` keeps the latest value of each metric and the stepped history in memory, and writes them
through tracking.py's own files and lock (so `lepton-ci train` merges them into run.json exactly as it
merges `log_metrics`) every `flush_every_s` seconds, on `flush()`/`close()`, and when the process exits.
Validation is the same as `log_metrics`': a non-number or non-finite value fails at the call that
logged it, with the metric named.

The Keras callback, the PyTorch helper and the scikit-learn scoring helper all write through here.
"""

from __future__ import annotations

import atexit
import json
import math
import threading
import time
from typing import Any

from lepton_ci import tracking


class Tracker:
    """Buffers metrics in memory and flushes them into the run directory (see the module docstring)."""

    def __init__(self, flush_every_s: float = 5.0) -> None:
        self.flush_every_s = flush_every_s
        self._latest: dict[str, int | float] = {}
        self._history: list[tuple[int, float, str, int | float]] = []
        self._lock = threading.Lock()
        self._next_flush = time.monotonic() + flush_every_s

    def log(self, name: str, value: Any, step: int | None = None) -> None:
        """Record one metric (the fast path: no dict flattening, no I/O until the next flush)."""
        self._record(name, value, step)
        if time.monotonic() >= self._next_flush:
            self.flush()

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Record a (possibly nested) dict of metrics, as `lepton_ci.log_metrics` takes it; one step's
        metrics are never split between two flushes."""
        if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
            raise ValueError(f"log_metrics step must be an integer; got {step!r}")
        for name, value in tracking.flat_metrics(_scalars(metrics)).items():
            self._record(name, value, step)
        if time.monotonic() >= self._next_flush:
            self.flush()

    def _record(self, name: str, value: Any, step: int | None) -> None:
        kind = type(value)
        if kind is not float and kind is not int:
            value = _number(name, value)
        elif kind is float and not math.isfinite(value):
            raise ValueError(f"metric {name!r} is {value}; metrics must be finite numbers")
        if type(name) is not str or not name:
            raise ValueError(f"metric keys must be non-empty strings; got {name!r}")
        with self._lock:
            self._latest[name] = value
            if step is not None:
                self._history.append((step, time.time(), name, value))

    def flush(self) -> None:
        """Write what was logged since the last flush into the run directory (under tracking.py's lock)."""
        with self._lock:
            latest, history = self._latest, self._history
            self._latest, self._history = {}, []
            self._next_flush = time.monotonic() + self.flush_every_s
        if not latest:
            return
        directory = tracking.run_dir()
        with tracking._locked(directory):
            tracking._merge(directory / tracking.METRICS_FILE, latest)
            if history:
                with open(directory / tracking.HISTORY_FILE, "a") as f:
                    f.write("".join(_history_lines(history)))

    close = flush


def _number(name: str, value: Any) -> int | float:
    """A framework scalar (numpy, torch, tf) as a Python number; anything else is the caller's mistake."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        raise ValueError(f"metric {name!r} must be a number; got {type(value).__name__} {value!r}")
    item = getattr(value, "item", None)
    try:
        number = item() if callable(item) else float(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"metric {name!r} must be a number (a scalar); got {type(value).__name__}: {exc}") from None
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise ValueError(f"metric {name!r} must be a number; got {type(value).__name__} {value!r}")
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(f"metric {name!r} is {number}; metrics must be finite numbers")
    return number


def _scalars(metrics: Any) -> Any:
    """`metrics` with framework scalars (numpy, torch, tf: anything with `.item()`) as Python numbers."""
    if not isinstance(metrics, dict):
        return metrics
    out: dict[Any, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out[key] = _scalars(value)
        elif not isinstance(value, (int, float, str)) and value is not None and callable(getattr(value, "item", None)):
            out[key] = _number(str(key), value)
        else:
            out[key] = value
    return out


def _history_lines(history: list[tuple[int, float, str, int | float]]) -> list[str]:
    """One JSON line per step, like `log_metrics(..., step=)` writes (consecutive entries of a step joined)."""
    lines: list[str] = []
    current: dict[str, Any] | None = None
    for step, when, name, value in history:
        if current is None or current["step"] != step:
            if current is not None:
                lines.append(json.dumps(current) + "\n")
            current = {"step": step, "time": when, "metrics": {}}
        current["metrics"][name] = value
    if current is not None:
        lines.append(json.dumps(current) + "\n")
    return lines


_DEFAULT: Tracker | None = None


def default_tracker() -> Tracker:
    """The process's shared tracker, flushed at exit."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Tracker()
        atexit.register(_DEFAULT.flush)
    return _DEFAULT
