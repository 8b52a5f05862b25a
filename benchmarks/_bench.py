"""Shared helpers for the side-by-side benchmarks (standard library only).

Each benchmark script imports this module; run the scripts as
``python3 benchmarks/<script>.py`` so that this directory is on ``sys.path``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DVC_VENV = BENCH_DIR / ".venv-dvc"
LEPTON_VENV = BENCH_DIR / ".venv-lepton"


class SetupError(Exception):
    """A tool under test is missing or unusable (exit code 2)."""


def bench_env() -> dict[str, str]:
    """Environment for every timed command: quiet, no telemetry, no colour, no pager."""
    env = dict(os.environ)
    env.update(
        {
            # DVC otherwise spawns a background analytics process after each command,
            # which would add load to the machine during the next timed run.
            "DVC_NO_ANALYTICS": "1",
            "NO_COLOR": "1",
            "PAGER": "cat",
            "GIT_PAGER": "cat",
            "PYTHONWARNINGS": "ignore",
        }
    )
    for var in ("LEPTON_CI_DEBUG", "PYTHONPROFILEIMPORTTIME", "PYTHONDEVMODE"):
        env.pop(var, None)
    return env


def explicit_tool(flag: str, value: str) -> Path:
    """The executable a --lepton/--dvc flag names: a path, else a command on PATH."""
    p = Path(value).expanduser()
    if p.exists():
        return p
    found = shutil.which(value)
    if not found:
        raise SetupError(f"{flag} {value}: no such file")
    return Path(found)


def add_common_arguments(ap: argparse.ArgumentParser, runs: int) -> None:
    """The options every benchmark script takes (run_all.sh passes them to each)."""
    ap.add_argument("--lepton", metavar="PATH",
                    help="lepton-ci executable (default: this checkout installed into benchmarks/.venv-lepton)")
    ap.add_argument("--dvc", metavar="PATH", help="dvc executable (default: benchmarks/.venv-dvc, installed if missing)")
    ap.add_argument("-n", "--runs", type=int, default=runs, help=f"timed runs per command (default {runs})")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds (default 1)")


def find_lepton(explicit: str | None) -> Path:
    """The lepton-ci under test: --lepton PATH, else this checkout installed as users get it.

    The default is a regular (non-editable) install of this checkout into benchmarks/.venv-lepton,
    refreshed on every run: byte-compiled like any pip install, as DVC is. The repo's .venv holds an
    editable install, whose import hook and (under PYTHONDONTWRITEBYTECODE) uncompiled sources would
    time the development set-up instead of the tool."""
    if explicit:
        p = explicit_tool("--lepton", explicit)
        return p.resolve() if p.is_absolute() else p.absolute()
    python = LEPTON_VENV / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    compiled = {**os.environ, "PYTHONDONTWRITEBYTECODE": ""}  # pip byte-compiles, as for any user
    try:
        if not python.exists():
            print(f"[setup] creating {LEPTON_VENV} ...", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "venv", str(LEPTON_VENV)], check=True)
            subprocess.run(pip + [str(REPO_ROOT)], check=True, env=compiled)
        print(f"[setup] installing this checkout into {LEPTON_VENV} ...", file=sys.stderr)
        subprocess.run(pip + ["--no-deps", "--force-reinstall", str(REPO_ROOT)], check=True, env=compiled)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SetupError(f"could not install lepton-ci into {LEPTON_VENV}: {exc}") from exc
    exe = LEPTON_VENV / "bin" / "lepton-ci"
    if not exe.exists():
        raise SetupError(f"pip install did not create {exe}")
    return exe


def find_dvc(explicit: str | None, install: bool = True) -> Path:
    """DVC: --dvc PATH, else benchmarks/.venv-dvc/bin/dvc (created with pip if missing)."""
    if explicit:
        return explicit_tool("--dvc", explicit).absolute()
    dvc = DVC_VENV / "bin" / "dvc"
    if dvc.exists():
        return dvc
    if not install:
        raise SetupError(f"{dvc} missing (run without --no-install to create it)")
    print(f"[setup] installing DVC into {DVC_VENV} (one time; takes a minute) ...", file=sys.stderr)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(DVC_VENV)], check=True)
        pip = [str(DVC_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run(pip + ["--upgrade", "pip"], check=True)
        subprocess.run(pip + ["dvc"], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SetupError(f"could not install DVC into {DVC_VENV}: {exc}") from exc
    if not dvc.exists():
        raise SetupError(f"pip install dvc did not create {dvc}")
    return dvc


def run_capture(cmd: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(cmd), cwd=cwd, env=bench_env(), capture_output=True, text=True, check=False
    )


def time_once(cmd: Sequence[str], cwd: Path | None = None) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """Wall time of one fresh process, output captured (so terminal speed doesn't count)."""
    env = bench_env()
    t0 = time.perf_counter()
    proc = subprocess.run(
        list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False
    )
    return time.perf_counter() - t0, proc


def time_interleaved(
    commands: dict[str, list[str]], runs: int, cwd: Path | None = None, warmup: int = 1
) -> dict[str, list[float]]:
    """Run every command ``runs`` times, round-robin (A B C A B C ...), after ``warmup`` rounds.

    Interleaving spreads machine noise (other tenants, CPU frequency) evenly over all
    commands, so ratios within one invocation are meaningful even on a noisy host.
    A non-zero exit status aborts the benchmark: timing a failing command is meaningless.
    """
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for i in range(warmup + runs):
        # Alternate the order each round as well, so no command always runs "after" another.
        order = list(commands.items())
        if i % 2:
            order.reverse()
        for name, cmd in order:
            dt, proc = time_once(cmd, cwd=cwd)
            if proc.returncode != 0:
                err = proc.stderr.decode(errors="replace").strip()[-2000:]
                raise SetupError(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{err}")
            if i >= warmup:
                samples[name].append(dt)
    return samples


def summarize(xs: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(xs),
        "min": min(xs),
        "max": max(xs),
        "n": float(len(xs)),
    }


def print_table(headers: list[str], rows: list[list[str]], out=sys.stdout) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: list[str]) -> str:
        parts = []
        for i, cell in enumerate(cells):
            # Left-align the first column (names), right-align numbers.
            parts.append(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]))
        return "| " + " | ".join(parts) + " |"

    print(line(headers), file=out)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|", file=out)
    for row in rows:
        print(line(row), file=out)


def tool_version(cmd: list[str]) -> str:
    try:
        proc = run_capture(cmd)
    except OSError as exc:
        return f"? ({exc})"
    out = (proc.stdout or proc.stderr).strip().splitlines()
    return out[0] if out else "?"


def host_line() -> str:
    try:
        load = "load %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "load ?"
    return f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {load}"


def free_port(host: str = "127.0.0.1", avoid: Sequence[int] = ()) -> int:
    """A TCP port that is free on ``host`` right now (the kernel's pick), not one of ``avoid``."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


def stop_process_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop a server started with ``start_new_session=True``: SIGTERM to it (it stops its own children), then,
    after ``grace`` seconds or once it has exited, SIGTERM and soon SIGKILL to whatever is left of its process
    group (children it left behind, or itself if it did not stop)."""
    with contextlib.suppress(subprocess.TimeoutExpired, ProcessLookupError):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(grace)
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
        deadline = time.monotonic() + wait
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break  # nothing left of the group
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.05)
    proc.wait()
