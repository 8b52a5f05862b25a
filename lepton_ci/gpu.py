"""NVIDIA GPUs through NVML (the `nvidia-ml-py` package, module `pynvml`): what a runner has, and what a run used.

NVML is the library nvidia-smi itself calls; asking it directly costs microseconds per sample instead of a
process start, so a sampler thread can watch memory and utilisation for the whole run. Everything here is
best effort by design: no package, no driver or no GPU is a normal CPU runner and yields "no GPUs", never an
error. A run that *asks* for GPUs is checked elsewhere (`require_gpus`), and that is where absence fails.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from lepton_ci.errors import UserError

# Files the NVIDIA driver creates (Linux; /dev/dxg: WSL 2). Without any of them there is no driver for NVML to
# find, and the import of pynvml plus its failed library search (about 80 ms) is skipped: `train` runs on CPU
# runners far more often than on GPU ones.
DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/dxg")


def _driver_present() -> bool:
    return any(os.path.exists(f) for f in DRIVER_FILES)


def _nvml() -> Any | None:
    """The initialised pynvml module, or None (package missing, no driver, no device)."""
    if not _driver_present():
        return None
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ...: a CPU machine
        return None
    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cuda_version(nvml: Any) -> str | None:
    """The CUDA version the driver supports, as nvidia-smi prints it ("12.4")."""
    try:
        v = int(nvml.nvmlSystemGetCudaDriverVersion_v2())
    except Exception:  # noqa: BLE001 - older drivers lack the call
        return None
    return f"{v // 1000}.{(v % 1000) // 10}"


def nvml_gpus() -> list[dict[str, Any]] | None:
    """GPUs as NVML reports them ({index, name, uuid, memory_mib, driver, cuda}), [] when NVML works and sees
    none, or None when NVML cannot be used here (so the caller may fall back to nvidia-smi)."""
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        cuda = _cuda_version(nvml)
        out = []
        for i in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)
            out.append(
                {
                    "index": i,
                    "name": _text(nvml.nvmlDeviceGetName(handle)),
                    "uuid": _text(nvml.nvmlDeviceGetUUID(handle)),
                    "memory_mib": int(mem.total) // (1024 * 1024),
                    "driver": driver,
                    "cuda": cuda,
                }
            )
        return out
    except Exception:  # noqa: BLE001 - a driver error mid-query: report no GPUs rather than fail the run
        return None
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


@dataclass
class _Usage:
    peak_memory_mib: int = 0
    peak_utilization_pct: int = 0
    utilization_sum: int = 0
    samples: int = 0


@dataclass
class GpuSampler:
    """Samples every GPU's used memory and utilisation on a thread while a run is going.

    `usage()` gives per GPU {index, peak_memory_mib, peak_utilization_pct, mean_utilization_pct, samples};
    an empty list when NVML is not available. Memory is the device's used memory (all processes on it): on a
    CI runner the job has the GPU to itself, and per-process accounting needs privileges runners rarely have.
    """

    interval: float = 1.0
    _nvml: Any = field(default=None, init=False, repr=False)
    _handles: list[Any] = field(default_factory=list, init=False, repr=False)
    _usage: list[_Usage] = field(default_factory=list, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    def __enter__(self) -> GpuSampler:
        self._nvml = _nvml()
        if self._nvml is None:
            return self
        try:
            count = int(self._nvml.nvmlDeviceGetCount())
            self._handles = [self._nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception:  # noqa: BLE001
            self._handles = []
        if not self._handles:
            return self
        self._usage = [_Usage() for _ in self._handles]
        self.sample()  # one sample even for a run shorter than the interval
        self._thread = threading.Thread(target=self._loop, name="lepton-ci-gpu-sampler", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        for handle, usage in zip(self._handles, self._usage, strict=True):
            try:
                used = int(self._nvml.nvmlDeviceGetMemoryInfo(handle).used) // (1024 * 1024)
                util = int(self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except Exception:  # noqa: BLE001 - a GPU that stops answering keeps its last figures
                continue
            usage.peak_memory_mib = max(usage.peak_memory_mib, used)
            usage.peak_utilization_pct = max(usage.peak_utilization_pct, util)
            usage.utilization_sum += util
            usage.samples += 1

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self.sample()  # the last state, for runs that peak at the end
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()

    def usage(self) -> list[dict[str, Any]]:
        return [
            {
                "index": i,
                "peak_memory_mib": u.peak_memory_mib,
                "peak_utilization_pct": u.peak_utilization_pct,
                "mean_utilization_pct": round(u.utilization_sum / u.samples, 1) if u.samples else 0.0,
                "samples": u.samples,
            }
            for i, u in enumerate(self._usage)
        ]


def requested(value: Any) -> bool:
    """Whether a `train.gpus` value asks for GPUs: 'all' or a positive count."""
    return value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value > 0)


def require_gpus(value: Any, where: str, found: list[dict[str, Any]]) -> None:
    """A CUDA request on a machine without (enough) NVIDIA GPUs: one line naming the key, before anything runs."""
    if not requested(value):
        return
    if not found:
        raise UserError(
            f"train.gpus is {value!r} but this machine has no NVIDIA GPU (no driver seen by NVML or nvidia-smi); "
            "run on a GPU runner or set train.gpus: 0",
            where=where,
        )
    if isinstance(value, int) and value > len(found):
        raise UserError(f"train.gpus is {value} but this machine has {len(found)} NVIDIA GPU(s)", where=where)
