"""`lepton-ci doctor`: is this runner fit to train on? Each check says what it found and what is missing.

A check is *required* or informative. On any runner, free disk and memory are required; with `--gpu` (a
runner meant for GPU jobs) the NVIDIA driver, NVML, CUDA in every installed framework and, when Docker is
reachable, Docker's GPU support become required too. A framework that is not installed is reported as such
and never fails the doctor: a runner for scikit-learn models needs neither torch nor TensorFlow.

Frameworks are probed in a child Python with a timeout: importing TensorFlow takes seconds and a broken
install can crash or hang the interpreter, which must not take the doctor with it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PROBE_TIMEOUT_S = 120.0

TORCH_PROBE = """\
import json, torch
cuda = torch.cuda.is_available()
devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
print(json.dumps({"version": torch.__version__, "cuda_build": torch.version.cuda, "cuda": cuda, "devices": devices}))
"""
TF_PROBE = """\
import json, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print(json.dumps({"version": tf.__version__, "cuda_build": tf.test.is_built_with_cuda(),
                  "devices": [g.name for g in gpus]}))
"""


@dataclass
class Check:
    name: str
    ok: bool
    required: bool
    detail: str
    missing: str = ""  # what to do about it, when not ok


def _nvidia_smi() -> Check:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return Check("nvidia-smi", False, False, "not found on PATH", "install the NVIDIA driver")
    try:
        proc = subprocess.run(
            [smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("nvidia-smi", False, False, f"did not run: {exc}", "check the NVIDIA driver")
    if proc.returncode != 0:
        first = (proc.stderr or proc.stdout).strip().splitlines()[:1]
        return Check("nvidia-smi", False, False, f"failed: {' '.join(first)}", "check the NVIDIA driver")
    gpus = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    return Check("nvidia-smi", bool(gpus), False, f"{len(gpus)} GPU(s): {'; '.join(gpus)}" if gpus else "no GPU")


def _nvml() -> Check:
    from lepton_ci.gpu import nvml_gpus

    if importlib.util.find_spec("pynvml") is None:
        return Check("nvml", False, False, "nvidia-ml-py is not installed", "pip install 'lepton-ci[gpu]'")
    found = nvml_gpus()
    if found is None:
        return Check("nvml", False, False, "NVML is not available (no NVIDIA driver)", "install the NVIDIA driver")
    if not found:
        return Check("nvml", False, False, "NVML sees no GPU", "check that the GPUs are visible to this runner")
    g = found[0]
    return Check(
        "nvml",
        True,
        False,
        f"{len(found)} GPU(s), {g['name']}, {g['memory_mib']} MiB, driver {g['driver']}, CUDA {g['cuda']}",
    )


def _probe(name: str, module: str, code: str, extra: str) -> tuple[Check, dict[str, Any] | None]:
    if importlib.util.find_spec(module) is None:
        return Check(
            name, False, False, "not installed", f"pip install 'lepton-ci[{extra}]' if you train with it"
        ), None
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, env=dict(os.environ)
        )
    except subprocess.TimeoutExpired:
        return Check(name, False, True, f"importing {module} took over {PROBE_TIMEOUT_S:g}s", "check the install"), None
    lines = proc.stdout.strip().splitlines()
    try:
        info = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
    except ValueError:
        info = None
    if not isinstance(info, dict):
        why = ((proc.stderr or proc.stdout).strip().splitlines() or [f"exit code {proc.returncode}"])[-1][:200]
        return Check(name, False, True, f"{module} is installed but does not import: {why}", "reinstall it"), None
    return Check(name, True, False, f"{module} {info.get('version')}"), info


def _framework_checks(gpu: bool) -> list[Check]:
    out = []
    torch_check, torch_info = _probe("torch", "torch", TORCH_PROBE, "torch")
    out.append(torch_check)
    if torch_info is not None:
        devices = torch_info.get("devices") or []
        build = torch_info.get("cuda_build")
        if torch_info.get("cuda"):
            out.append(Check("torch-cuda", True, gpu, f"CUDA {build}: {', '.join(devices)}"))
        else:
            why = "a CPU-only build" if not build else f"built for CUDA {build}, but no GPU is visible"
            out.append(Check("torch-cuda", False, gpu, why, "install a CUDA build of torch" if not build else ""))
    tf_check, tf_info = _probe("tensorflow", "tensorflow", TF_PROBE, "tensorflow")
    out.append(tf_check)
    if tf_info is not None:
        devices = tf_info.get("devices") or []
        if devices:
            out.append(Check("tensorflow-gpu", True, gpu, f"{len(devices)} GPU(s): {', '.join(devices)}"))
        else:
            why = "no GPU visible" + (
                "" if tf_info.get("cuda_build") else " (a build without CUDA, e.g. tensorflow-cpu)"
            )
            out.append(Check("tensorflow-gpu", False, gpu, why, "pip install 'tensorflow[and-cuda]' on GPU runners"))
    return out


def _docker(gpu: bool, require_docker: bool) -> list[Check]:
    if importlib.util.find_spec("docker") is None:
        return [
            Check("docker", False, require_docker, "the docker SDK is not installed", "pip install 'lepton-ci[docker]'")
        ]
    docker: Any = importlib.import_module("docker")
    try:
        client = docker.from_env(timeout=10)
        info = client.info()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the engine is "not reachable"
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        return [
            Check("docker", False, require_docker, f"engine not reachable: {first}", "start dockerd or set DOCKER_HOST")
        ]
    runtimes = sorted((info.get("Runtimes") or {}).keys())
    checks = [
        Check("docker", True, require_docker, f"engine {info.get('ServerVersion')}, runtimes: {', '.join(runtimes)}")
    ]
    cdi = [d for d in info.get("CDISpecDirs") or [] if Path(d).is_dir() and any(Path(d).glob("nvidia*"))]
    if "nvidia" in runtimes or cdi:
        how = "nvidia runtime" if "nvidia" in runtimes else f"CDI specs in {', '.join(cdi)}"
        checks.append(Check("docker-gpu", True, gpu, f"GPU containers supported ({how}; --gpus / DeviceRequest)"))
    else:
        checks.append(
            Check(
                "docker-gpu",
                False,
                gpu,
                "no nvidia runtime and no NVIDIA CDI spec",
                "install the NVIDIA Container Toolkit",
            )
        )
    return checks


def _disk(path: Path, min_gb: float) -> Check:
    usage = shutil.disk_usage(path)
    free = usage.free / 1e9
    ok = free >= min_gb
    return Check("disk", ok, True, f"{free:.1f} GB free at {path} (need {min_gb:g})", "" if ok else "free disk space")


def _memory(min_gb: float) -> Check:
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    if available is None:
        pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else 0
        available = pages * os.sysconf("SC_PAGE_SIZE") / 1e9 if pages else 0.0
    ok = available >= min_gb
    return Check("memory", ok, True, f"{available:.1f} GB available (need {min_gb:g})", "" if ok else "free memory")


def doctor(
    *,
    gpu: bool = False,
    require_docker: bool = False,
    path: Path = Path("."),
    min_disk_gb: float = 5,
    min_memory_gb: float = 2,
) -> list[Check]:
    """Every check, in a fixed order. With `gpu`, the GPU checks are required."""
    checks = [_nvidia_smi(), _nvml()]
    if gpu:
        for c in checks:
            c.required = True
    checks += _framework_checks(gpu)
    checks += _docker(gpu, require_docker)
    checks += [_disk(path, min_disk_gb), _memory(min_memory_gb)]
    return checks


def passed(checks: list[Check]) -> bool:
    return all(c.ok for c in checks if c.required)


def as_json(checks: list[Check]) -> dict[str, Any]:
    return {"passed": passed(checks), "checks": [asdict(c) for c in checks]}
