"""The train step's inputs: artifacts and data must stay inside the project, train.log is private, metrics
notes reach the record and stderr, a metrics bomb is refused, and --param values use the bounded loader."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lepton_ci.config import load_config
from lepton_ci.errors import UserError
from lepton_ci.steps.train import parse_param_overrides, train

ROOT = Path(__file__).resolve().parents[2]


def project(root: Path, artifacts: list[str], data: list[str] | None = None, metrics: str = "{\"acc\": 0.9}",
            metrics_name: str = "metrics.json") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.py").write_text(textwrap.dedent(f"""\
        open({metrics_name!r}, "w").write({metrics!r})
        open("model.bin", "w").write("weights")
        print("trained")
        """))
    config = {
        "model": {"name": "toy"},
        "train": {"command": f"{sys.executable} train.py", "metrics": [metrics_name], "artifacts": artifacts,
                  **({"data": data} if data is not None else {})},
    }
    (root / "lepton.yml").write_text(json.dumps(config, indent=2))  # JSON is YAML; lines are stable
    return root / "lepton.yml"


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("runner secret")
    return secret


@pytest.mark.parametrize("key", ["artifacts", "data"])
@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "symlinked_dir"])
def test_files_outside_the_project_are_refused(tmp_path: Path, outside: Path, key: str, how: str) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    if how == "dotdot":
        pattern = "../outside/secret.txt"
    elif how == "absolute":
        pattern = str(outside)
    elif how == "symlink":
        (root / "link.txt").symlink_to(outside)
        pattern = "link.txt"
    else:
        (root / "inputs").symlink_to(outside.parent, target_is_directory=True)
        pattern = "inputs/**/*.txt"
    cfg_path = project(root, ["model.bin", pattern] if key == "artifacts" else ["model.bin"],
                       data=[pattern] if key == "data" else None)
    with pytest.raises(UserError) as info:
        train(load_config(cfg_path), quiet=True)
    assert info.value.where == f"lepton.yml:{_line_of(cfg_path, json.dumps(pattern))}"
    assert repr(pattern) in info.value.message
    assert f"train.{key}[" in info.value.message and "outside the project directory" in info.value.message


def test_symlink_and_dotdot_that_stay_inside_are_fine(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "real.bin").write_text("x")
    (root / "alias.bin").symlink_to(root / "sub" / "real.bin")
    record = train(load_config(project(root, ["model.bin", "alias.bin", "sub/../model.bin"])), quiet=True)
    assert sorted(a["path"] for a in record.artifacts) == ["model.bin", "sub/real.bin"]


def test_train_log_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        record = train(load_config(project(tmp_path / "proj", ["model.bin"])), quiet=True)
    finally:
        os.umask(old)
    log = tmp_path / "proj" / record.exit["log"]
    assert log.read_text() == "trained\n"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_non_finite_metric_is_a_note_in_the_record_and_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = project(tmp_path / "proj", ["model.bin"], metrics='{"acc": 0.9, "loss": NaN, "big": 1' + "0" * 400 + "}")
    record = train(load_config(cfg), quiet=True)
    assert record.metrics == {"acc": 0.9}
    assert record.extra["notes"] == [
        "metrics.json: metric 'loss' is nan; skipped (metrics must be finite numbers)",
        "metrics.json: metric 'big' is an integer too large for a float (401 digits); skipped (metrics must be finite numbers)",
    ]
    written = json.loads((tmp_path / "proj" / ".lepton" / "run.json").read_text())
    assert written["notes"] == record.extra["notes"]
    err = capsys.readouterr().err
    assert "lepton-ci: warning: metrics.json: metric 'loss' is nan" in err


def test_yaml12_metrics_file_in_train(tmp_path: Path) -> None:
    cfg = project(tmp_path / "proj", ["model.bin"], metrics="lr: 1e-3\non: 2\nacc: 0.5\n", metrics_name="m.yaml")
    assert train(load_config(cfg), quiet=True).metrics == {"lr": 0.001, "on": 2, "acc": 0.5}


def test_recursive_alias_in_a_metrics_file_fails_train_quickly(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    project(root, ["model.bin"], metrics="a: &a [*a]\n", metrics_name="m.yaml")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "lepton_ci.cli", "train", "--quiet"], cwd=root, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "m.yaml" in lines[0] and "recursive alias" in lines[0], proc.stderr
    assert time.monotonic() - start < 10


def test_param_overrides_use_the_bounded_loader() -> None:
    assert parse_param_overrides(["lr=1e-3", "on=yes", "name=resnet", "bad=[unclosed", "empty="]) == {
        "lr": 0.001, "on": True, "name": "resnet", "bad": "[unclosed", "empty": "",
    }
    with pytest.raises(UserError, match="recursive alias"):
        parse_param_overrides(["x=&a [*a]"])


def test_processes_the_training_command_leaves_behind_are_stopped(tmp_path: Path) -> None:
    """A background process that outlived `train` could wait for the gate step and read its environment."""
    root = tmp_path / "proj"
    cfg = project(root, ["model.bin"])
    script = "import subprocess, sys\np = subprocess.Popen(['sleep', '300'])\nopen('child.pid', 'w').write(str(p.pid))\n"
    (root / "spawn.py").write_text(script)
    config = json.loads(cfg.read_text())
    config["train"]["command"] = f"{sys.executable} spawn.py && {config['train']['command']}"
    cfg.write_text(json.dumps(config, indent=2))
    train(load_config(cfg), quiet=True)
    pid = int((root / "child.pid").read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            break  # gone
        if state == "Z":
            break  # killed, waiting to be reaped by its parent (init)
        time.sleep(0.05)
    else:
        raise AssertionError(f"the background process {pid} of the training command is still running")
