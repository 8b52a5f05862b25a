"""What training scripts call: `lepton_ci.log_metrics`, `log_params`, `params`.

`lepton-ci train` sets LEPTON_CI_RUN_DIR and LEPTON_CI_PARAMS for the command it runs; these helpers
write into that directory so the step can merge them into run.json. Outside `lepton-ci train` they
write to .lepton/logged so a script run by hand still works.

Several processes may log at once (torchrun starts one per GPU, each rank calling `log_metrics`), so
each read-modify-write of a JSON file, and each history append, happens under an exclusive `flock` on
one lock file in the run directory, and the JSON is replaced atomically: no update is lost and a reader
never sees half a file. Bad values fail in the training script, at the call that logged them, with the
key named, rather than later in `train` or silently in the record.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lepton_ci.fsutil import atomic_write_json

RUN_DIR_ENV = "LEPTON_CI_RUN_DIR"
PARAMS_ENV = "LEPTON_CI_PARAMS"
METRICS_FILE = "logged_metrics.json"
HISTORY_FILE = "logged_metrics_history.jsonl"
PARAMS_FILE = "logged_params.json"
LOCK_FILE = "logged.lock"


def run_dir() -> Path:
    return Path(os.environ.get(RUN_DIR_ENV) or ".lepton/logged")


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Exclusive lock shared by every process logging into `directory` (released when the fd closes,
    also if the process dies)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _merge(path: Path, new: dict[str, Any]) -> None:
    """Read-modify-write of one JSON file; the caller holds the lock."""
    current = json.loads(path.read_text()) if path.is_file() else {}
    current.update(new)
    atomic_write_json(path, current)


def _name(prefix: str, key: Any, what: str) -> str:
    if not isinstance(key, str) or not key:
        where = f" under {prefix!r}" if prefix else ""
        raise ValueError(f"{what} keys must be non-empty strings; got {key!r}{where}")
    return f"{prefix}.{key}" if prefix else key


def flat_metrics(metrics: Any) -> dict[str, int | float]:
    """Nested (`{"eval": {"acc": 0.9}}`) or flat (`{"eval.acc": 0.9}`) or mixed, to flat dotted names.

    Only numbers are metrics: a bool, string, None, NaN, an infinity, an integer too large for a float,
    an empty mapping or a name given twice is a ValueError naming the key."""
    if not isinstance(metrics, dict):
        raise ValueError(f"log_metrics takes a dict of metric names to numbers; got {type(metrics).__name__}")
    if not metrics:
        raise ValueError("log_metrics got an empty dict: nothing to log")
    out: dict[str, int | float] = {}
    stack: list[tuple[str, Any]] = [("", metrics)]
    while stack:
        prefix, mapping = stack.pop()
        for key, value in mapping.items():
            name = _name(prefix, key, "metric")
            if isinstance(value, dict):
                if not value:
                    raise ValueError(f"metric {name!r} is an empty dict; nothing to log")
                stack.append((name, value))
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"metric {name!r} must be a number; got {type(value).__name__} {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"metric {name!r} is {value}; metrics must be finite numbers")
            if not isinstance(value, float) and abs(value) > sys.float_info.max:
                raise ValueError(f"metric {name!r} is an integer too large for a float")
            if name in out:
                raise ValueError(f"metric {name!r} is given twice (as a dotted key and as a nested one)")
            out[name] = value
    return out


def log_metrics(metrics: dict[str, Any], step: int | None = None) -> None:
    """Record metrics for this run; later calls override earlier values of the same name. With `step`,
    the call is also appended to the history file (one JSON line per call)."""
    flat = flat_metrics(metrics)
    if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
        raise ValueError(f"log_metrics step must be an integer; got {step!r}")
    d = run_dir()
    with _locked(d):
        _merge(d / METRICS_FILE, flat)
        if step is not None:
            with open(d / HISTORY_FILE, "a") as f:
                f.write(json.dumps({"step": step, "time": time.time(), "metrics": flat}) + "\n")


def _check_params(params: Any, prefix: str = "") -> None:
    """Params are any JSON value except non-finite floats, with string keys; an empty dict is a mistake."""
    if isinstance(params, dict):
        if not params:
            raise ValueError(
                f"param {prefix!r} is an empty dict" if prefix else "log_params got an empty dict: nothing to log"
            )
        for key, value in params.items():
            _check_params(value, _name(prefix, key, "param"))
    elif isinstance(params, (list, tuple)):
        for i, value in enumerate(params):
            _check_params(value, f"{prefix}.{i}")
    elif isinstance(params, float) and not math.isfinite(params):
        raise ValueError(f"param {prefix!r} is {params}; params must be finite")
    elif params is not None and not isinstance(params, (str, int, float, bool)):
        raise ValueError(
            f"param {prefix!r} must be a JSON value (string, number, bool, null, list, dict); "
            f"got {type(params).__name__}"
        )


def log_params(params: dict[str, Any]) -> None:
    """Record parameters for this run (nested or dotted keys, stored as given); merged over the
    configured params in run.json. Unlike metrics, strings, booleans and null are valid params."""
    if not isinstance(params, dict):
        raise ValueError(f"log_params takes a dict; got {type(params).__name__}")
    _check_params(params)
    d = run_dir()
    with _locked(d):
        _merge(d / PARAMS_FILE, dict(params))


def params() -> dict[str, Any]:
    raw = os.environ.get(PARAMS_ENV)
    return json.loads(raw) if raw else {}
