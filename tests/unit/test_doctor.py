"""`lepton-ci doctor` on this (CPU) runner: what is required passes, what a GPU runner needs is reported missing,
a framework that is not installed is reported and never crashes the doctor, a broken one fails it, and an engine
that does not answer is "not reachable". Everything is probed for real: the frameworks in a child Python, the
Docker engine through the SDK, disk and memory from the system."""

from __future__ import annotations

import json
from pathlib import Path

from lepton_ci.steps import doctor
from tests.e2e.helpers import assert_one_line_error, cli

NO_DOCKER = {"DOCKER_HOST": "unix:///nonexistent/docker.sock", "PATH": "/usr/bin:/bin"}


def by_name(checks: list[dict]) -> dict[str, dict]:
    return {c["name"]: c for c in checks}


def test_a_cpu_runner_passes_the_required_checks(tmp_path: Path) -> None:
    r = cli("doctor", "--json", "--path", str(tmp_path), "--min-disk-gb", "0.01", "--min-memory-gb", "0.01",
            cwd=tmp_path, env=NO_DOCKER, timeout=300)
    assert r.code == 0, r
    report = json.loads(r.out)
    checks = by_name(report["checks"])
    assert report["passed"] is True
    assert checks["nvidia-smi"] == {"name": "nvidia-smi", "ok": False, "required": False, "detail": "not found on PATH",
                                    "missing": "install the NVIDIA driver"}
    assert checks["disk"]["ok"] and checks["disk"]["required"] and checks["memory"]["ok"]
    assert not checks["docker"]["ok"] and "not reachable" in checks["docker"]["detail"]
    assert not checks["docker"]["required"]
    for framework in ("torch", "tensorflow"):  # installed or not, never a failure on a CPU runner
        assert checks[framework]["required"] is False or checks[framework]["ok"], checks[framework]


def test_a_gpu_runner_without_gpus_fails_and_says_what_is_missing(tmp_path: Path) -> None:
    r = cli("doctor", "--gpu", "--min-disk-gb", "0", "--min-memory-gb", "0", cwd=tmp_path, env=NO_DOCKER, timeout=300)
    assert r.code == 1, r
    assert "✘ nvidia-smi: not found on PATH -> install the NVIDIA driver" in r.out
    assert_one_line_error(r, 1, "doctor: required check(s) failed", "nvidia-smi", "nvml")


def test_not_enough_disk_fails(tmp_path: Path) -> None:
    r = cli("doctor", "--json", "--min-disk-gb", "1e12", cwd=tmp_path, env=NO_DOCKER, timeout=300)
    assert r.code == 1, r
    assert by_name(json.loads(r.out)["checks"])["disk"]["ok"] is False


def test_requiring_docker_fails_when_the_engine_does_not_answer(tmp_path: Path) -> None:
    r = cli("doctor", "--docker", "--min-disk-gb", "0", "--min-memory-gb", "0", cwd=tmp_path, env=NO_DOCKER,
            timeout=300)
    assert_one_line_error(r, 1, "docker")


def test_a_missing_framework_is_reported_and_a_broken_one_fails(tmp_path: Path, monkeypatch) -> None:
    check, info = doctor._probe("nosuch", "lepton_no_such_framework", "print(1)", "nosuch")
    assert (check.ok, check.required, check.detail, info) == (False, False, "not installed", None)
    broken = tmp_path / "lepton_broken_framework"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('libcudart.so.12: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    check, info = doctor._probe("broken", "lepton_broken_framework", "import lepton_broken_framework", "x")
    assert not check.ok and check.required and "libcudart.so.12" in check.detail and info is None
