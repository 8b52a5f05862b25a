"""GPU capture parses nvidia-smi's real output format. No NVIDIA driver can exist on these machines, so a
script on PATH prints what nvidia-smi prints (format taken from an H100 host); everything else is real."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from lepton_ci.environment import capture, gpus, package_versions

QUERY = "NVIDIA H100 80GB HBM3, 81559, 550.54.15\nNVIDIA H100 80GB HBM3, 81559, 550.54.15\n"
HEADER = "| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |\n"


def _fake_smi(bin_dir: Path, code: int = 0) -> None:
    script = bin_dir / "nvidia-smi"
    script.write_text(f"""#!/bin/sh
case "$1" in
  --query-gpu=*) printf '{QUERY}'; exit {code};;
  *) printf '{HEADER}';;
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_gpus_from_nvidia_smi(tmp_path: Path, monkeypatch) -> None:
    _fake_smi(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    found = gpus()
    assert found == [{"name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559, "driver": "550.54.15", "cuda": "12.4"}] * 2


def test_no_gpus_without_driver_or_when_smi_fails(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpus() == []
    _fake_smi(tmp_path, code=9)
    assert gpus() == []


def test_capture_reads_versions_without_importing() -> None:
    import sys

    had_sklearn = "sklearn" in sys.modules
    env = capture()
    assert env["python"].count(".") == 2 and env["host"]["cpus"] >= 1
    assert "lepton-ci" in package_versions()
    assert ("sklearn" in sys.modules) == had_sklearn
