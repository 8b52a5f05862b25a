"""What training scripts call: `lepton_ci.log_metrics`, `log_params`, `params`.

`lepton-ci train` sets LEPTON_CI_RUN_DIR and LEPTON_CI_PARAMS for the command it runs; these helpers
write into that directory so the step can merge them into run.json. Outside `lepton-ci train` they
write to .lepton/logged so a script run by hand still works.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from lepton_ci.fsutil import atomic_write_json

RUN_DIR_ENV = "LEPTON_CI_RUN_DIR"
PARAMS_ENV = "LEPTON_CI_PARAMS"
METRICS_FILE = "logged_metrics.json"
HISTORY_FILE = "logged_metrics_history.jsonl"
PARAMS_FILE = "logged_params.json"


def run_dir() -> Path:
    return Path(os.environ.get(RUN_DIR_ENV) or ".lepton/logged")


def _merge(path: Path, new: dict[str, Any]) -> None:
    current = json.loads(path.read_text()) if path.is_file() else {}
    current.update(new)
    atomic_write_json(path, current)


def log_metrics(metrics: dict[str, Any], step: int | None = None) -> None:
    from lepton_ci.metrics import flatten

    flat = flatten(metrics)
    skipped = set(metrics) - {k.split(".", 1)[0] for k in flat}
    if skipped:
        raise ValueError(f"log_metrics takes numbers (nested dicts allowed); not numbers: {sorted(skipped)}")
    bad = [k for k, v in flat.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise ValueError(f"log_metrics got non-finite values for {bad}")
    d = run_dir()
    d.mkdir(parents=True, exist_ok=True)
    _merge(d / METRICS_FILE, flat)
    if step is not None:
        with open(d / HISTORY_FILE, "a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), "metrics": flat}) + "\n")


def log_params(params: dict[str, Any]) -> None:
    d = run_dir()
    d.mkdir(parents=True, exist_ok=True)
    _merge(d / PARAMS_FILE, dict(params))


def params() -> dict[str, Any]:
    raw = os.environ.get(PARAMS_ENV)
    return json.loads(raw) if raw else {}
