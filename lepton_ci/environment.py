"""Capture of the environment a run happened in: Python, key package versions, GPUs, host.

Package versions come from installed metadata, never from importing the packages, so recording
torch's version costs a file read and not a multi-second import.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import subprocess
import sys
from typing import Any

KEY_PACKAGES = (
    "lepton-ci",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "joblib",
    "torch",
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "xgboost",
    "lightgbm",
    "onnx",
    "onnxruntime",
    "transformers",
)


def package_versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in KEY_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def gpus() -> list[dict[str, Any]]:
    """GPUs with driver and CUDA versions: NVML (nvidia-ml-py) when installed, else nvidia-smi; empty when
    there is no NVIDIA driver."""
    from lepton_ci.gpu import nvml_gpus

    found = nvml_gpus()
    return found if found is not None else smi_gpus()


def smi_gpus() -> list[dict[str, Any]]:
    """GPUs as nvidia-smi reports them; empty when there is no NVIDIA driver."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        q = subprocess.run(
            [smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=15,
        )
        head = subprocess.run([smi], capture_output=True, text=True, timeout=15).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    if q.returncode != 0:
        return []
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", head)
    out = []
    for line in q.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            mem = int(parts[1]) if parts[1].isdigit() else parts[1]
            out.append(
                {"name": parts[0], "memory_mib": mem, "driver": parts[2], "cuda": cuda.group(1) if cuda else None}
            )
    return out


def capture() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "packages": package_versions(),
        "gpus": gpus(),
        "host": {"name": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count()},
    }
