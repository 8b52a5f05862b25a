"""GPU figures in run.json, the CUDA-request check, and the docker DeviceRequest of train.image.

No NVIDIA driver can exist on these machines. The real nvidia-ml-py (when installed) is used for the "no
driver" path: NVML's own NVMLError_LibraryNotFound must read as "no GPUs", never as an error. For the path
with GPUs, a stand-in `pynvml` module answers the NVML calls lepton-ci makes with the values and types the
real bindings return (bytes or str names, c_ulonglong-like memory structs, a utilisation struct).
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from lepton_ci.config import load_config
from lepton_ci.errors import UserError
from lepton_ci.gpu import GpuSampler, nvml_gpus, require_gpus
from tests.e2e.helpers import assert_one_line_error, cli, make_project, require


class _Mem:
    def __init__(self, total: int, used: int) -> None:
        self.total, self.used, self.free = total, used, total - used


class _Util:
    def __init__(self, gpu: int) -> None:
        self.gpu, self.memory = gpu, 0


def fake_nvml(monkeypatch: pytest.MonkeyPatch, used: list[list[int]], util: list[list[int]]) -> types.ModuleType:
    """A pynvml with len(used) GPUs; each call of the memory/utilisation query returns the next value."""
    mod = types.ModuleType("pynvml")
    calls = {"mem": [0] * len(used), "util": [0] * len(used), "init": 0, "shutdown": 0}

    def nvmlInit() -> None:  # noqa: N802 - NVML's own names
        calls["init"] += 1

    def nvmlShutdown() -> None:  # noqa: N802
        calls["shutdown"] += 1

    def mem(h: int) -> _Mem:
        i = min(calls["mem"][h], len(used[h]) - 1)
        calls["mem"][h] += 1
        return _Mem(80 * 1024**3, used[h][i] * 1024**2)

    def utilization(h: int) -> _Util:
        i = min(calls["util"][h], len(util[h]) - 1)
        calls["util"][h] += 1
        return _Util(util[h][i])

    mod.nvmlInit = nvmlInit  # type: ignore[attr-defined]
    mod.nvmlShutdown = nvmlShutdown  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: len(used)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = lambda h: b"NVIDIA H200"  # type: ignore[attr-defined]
    mod.nvmlDeviceGetUUID = lambda h: f"GPU-{h:08d}"  # type: ignore[attr-defined]
    mod.nvmlSystemGetDriverVersion = lambda: "570.86.15"  # type: ignore[attr-defined]
    mod.nvmlSystemGetCudaDriverVersion_v2 = lambda: 12080  # type: ignore[attr-defined]
    mod.nvmlDeviceGetMemoryInfo = mem  # type: ignore[attr-defined]
    mod.nvmlDeviceGetUtilizationRates = utilization  # type: ignore[attr-defined]
    mod.calls = calls  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    monkeypatch.setattr("lepton_ci.gpu._driver_present", lambda: True)  # as on a machine with the driver
    return mod


def test_real_nvml_without_a_driver_means_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    require("pynvml")  # nvidia-ml-py, the `gpu` extra: skipped off CI, a failure under CI=true
    assert nvml_gpus() is None  # no driver files: NVML is not even loaded
    monkeypatch.setattr("lepton_ci.gpu._driver_present", lambda: True)  # a stale /dev node, say: NVML is asked
    assert nvml_gpus() is None  # the real pynvml: NVMLError_LibraryNotFound, read as "no GPUs", no error
    with GpuSampler(interval=0.05) as sampler:
        pass
    assert sampler.usage() == []


def test_no_pynvml_means_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails as when the package is absent
    assert nvml_gpus() is None
    with GpuSampler() as sampler:
        pass
    assert sampler.usage() == []


def test_gpus_driver_and_cuda_from_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_nvml(monkeypatch, [[0], [0]], [[0], [0]])
    found = nvml_gpus()
    assert found == [
        {"index": i, "name": "NVIDIA H200", "uuid": f"GPU-{i:08d}", "memory_mib": 81920, "driver": "570.86.15",
         "cuda": "12.8"}
        for i in range(2)
    ]
    assert nvml.calls["shutdown"] == nvml.calls["init"] == 1  # type: ignore[attr-defined]


def test_sampler_keeps_peak_memory_and_utilisation_per_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml(monkeypatch, [[100, 5000, 300], [10, 20, 30]], [[0, 90, 40], [5, 5, 5]])
    with GpuSampler(interval=0.01) as sampler:
        import time

        time.sleep(0.1)
    usage = sampler.usage()
    assert [u["peak_memory_mib"] for u in usage] == [5000, 30]
    assert [u["peak_utilization_pct"] for u in usage] == [90, 5]
    assert usage[0]["samples"] >= 3 and 0 < usage[0]["mean_utilization_pct"] <= 90


def test_train_records_gpus_and_their_usage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lepton_ci.steps.train import train

    fake_nvml(monkeypatch, [[1234]], [[77]])
    root = make_project(tmp_path / "p")
    record = train(load_config(root / "lepton.yml"), quiet=True)
    env = json.loads((root / ".lepton" / "run.json").read_text())["environment"]
    assert env["gpus"][0]["name"] == "NVIDIA H200" and env["gpus"][0]["cuda"] == "12.8"
    assert env["gpu_usage"] == record.environment["gpu_usage"]
    assert env["gpu_usage"][0]["peak_memory_mib"] == 1234 and env["gpu_usage"][0]["peak_utilization_pct"] == 77


def test_a_cpu_run_records_no_gpus(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    r = cli("train", "-q", cwd=root, env={"PATH": "/usr/bin:/bin"})
    assert r.code == 0, r
    env = json.loads((root / ".lepton" / "run.json").read_text())["environment"]
    assert env["gpus"] == [] and env["gpu_usage"] == []


def test_a_cuda_request_without_a_gpu_is_one_line(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    (root / "lepton.yml").write_text((root / "lepton.yml").read_text().replace("train:\n", "train:\n  gpus: all\n"))
    r = cli("train", cwd=root, env={"PATH": "/usr/bin:/bin"})
    assert_one_line_error(r, 2, "train.gpus is 'all'", "no NVIDIA GPU", "lepton.yml:")
    assert not (root / ".lepton" / "run.json").exists(), "nothing ran"


def test_require_gpus_counts() -> None:
    one = [{"name": "x"}]
    require_gpus(0, "lepton.yml:3", [])
    require_gpus(1, "lepton.yml:3", one)
    require_gpus("all", "lepton.yml:3", one)
    with pytest.raises(UserError, match="has 1 NVIDIA GPU"):
        require_gpus(2, "lepton.yml:3", one)


@pytest.mark.parametrize("gpus,count", [("all", -1), (2, 2), (0, None)])
def test_device_request_is_docker_run_gpus(gpus: Any, count: int | None) -> None:
    require("docker")
    from lepton_ci.train_container import device_requests

    requests = device_requests(gpus)
    if count is None:
        assert requests == []
        return
    (req,) = requests
    # what `docker run --gpus all` sends to the engine (HostConfig.DeviceRequests)
    assert dict(req) == {"Driver": "", "Count": count, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}
