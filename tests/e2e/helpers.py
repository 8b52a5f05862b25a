"""Helpers for end-to-end tests that run the real `lepton-ci` CLI as a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

CLI = [sys.executable, "-m", "lepton_ci.cli"]

TRAIN_SCRIPT = """\
import json, os, sys, time
import lepton_ci
p = lepton_ci.params()
acc = float(p.get("acc", 0.9))
if p.get("fail"):
    print("boom", file=sys.stderr); sys.exit(3)
if p.get("sleep"):
    time.sleep(float(p["sleep"]))
with open("metrics.json", "w") as f:
    json.dump({"eval": {"accuracy": acc, "loss": 1 - acc}, "epochs": 3}, f)
with open("model.bin", "wb") as f:
    f.write(("weights %s" % acc).encode())
lepton_ci.log_metrics({"fit_seconds": 0.5})
print("trained acc=%s" % acc)
"""

CONFIG = """\
model:
  name: toy
train:
  command: {python} train.py
  params: {{acc: 0.9}}
  metrics: [metrics.json]
  artifacts: [model.bin]
gate:
  rules:
    - metric: eval.accuracy
      min: 0.5
      max_drop: 0.05
    - metric: eval.loss
      direction: lower
      max_drop_pct: 50
"""


@dataclass
class Result:
    code: int
    out: str
    err: str

    def __repr__(self) -> str:
        return f"Result(code={self.code}, out={self.out[-2000:]!r}, err={self.err[-2000:]!r})"


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run([*CLI, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def make_project(root: Path, config: str = CONFIG, script: str = TRAIN_SCRIPT) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.py").write_text(script)
    (root / "lepton.yml").write_text(textwrap.dedent(config).format(python=shutil.which("python3") and sys.executable))
    return root


def assert_one_line_error(r: Result, code: int, *needles: str) -> None:
    """A user-facing error: the expected exit code, one line on stderr, no traceback, naming what's wrong."""
    assert r.code == code, r
    lines = [line for line in r.err.strip().splitlines() if line.strip() and not line.startswith("lepton-ci: warning")]
    assert "Traceback" not in r.err, r
    assert len(lines) >= 1 and "error" in lines[-1], r
    for needle in needles:
        assert needle in lines[-1], (needle, r)


def require(module: str):
    """Import a required component: skip off CI, but fail under CI=true (a missing component is a defect)."""
    import importlib

    import pytest

    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"{module} is not installed")
