"""The local target's router process (lepton_ci/deploy/router.py): start it once, keep it, move its routes.

The router outlives every model server: its address is the deployment's endpoint, recorded in
deployment.json under `state.router`, and a later deploy reuses the running router (or starts it again on
the same port), so clients keep one URL across versions. Its routes file lives in the deploy state
directory, which only the deploying user can write.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from lepton_ci.deploy import local
from lepton_ci.errors import TransientError

ROUTER_PREFIX = ["-I", "-m", "lepton_ci.deploy.router"]
ACK_TIMEOUT_S = 10.0


def is_router(state: dict[str, Any] | None) -> bool:
    """The recorded router is alive and is our router (pid, start time and command line all agree)."""
    if not isinstance(state, dict) or not local.process_alive(state):
        return False
    try:
        argv = Path(f"/proc/{state['pid']}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"lepton_ci.deploy.router" in argv


def ensure(state_dir: Path, host: str, port: int, recorded: dict[str, Any] | None) -> dict[str, Any]:
    """The running router, or a new one: on the recorded router's port when there was one (the endpoint
    clients know), else on `port` (0: a free one)."""
    if is_router(recorded) and recorded is not None:
        return recorded
    run_dir = state_dir / "router"
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    routes = run_dir / "routes.json"
    if recorded and isinstance(recorded.get("port"), int):
        port = recorded["port"]
    port_file = run_dir / "port"
    port_file.unlink(missing_ok=True)
    routes.unlink(missing_ok=True)
    routes.with_name("routes.json.applied").unlink(missing_ok=True)
    cmd = [sys.executable, *ROUTER_PREFIX, "--host", host, "--port", str(port), "--routes", str(routes)]
    cmd += ["--port-file", str(port_file)]
    log = run_dir / "router.log"
    proc = local._spawn(cmd, log, os.O_APPEND)
    state = {
        "pid": proc.pid,
        "start_ticks": local._start_ticks(proc.pid),
        "host": host,
        "routes": str(routes),
        "log": str(log),
    }
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TransientError(f"the router did not start: {local._log_tail(log)}")
        if port_file.is_file() and port_file.read_text().strip().isdigit():
            state["port"] = int(port_file.read_text().strip())
            return state
        time.sleep(0.02)
    stop(state)
    raise TransientError(f"the router did not start within 10s: {local._log_tail(log)}")


def route(state: dict[str, Any], primary: str, canary: str | None = None) -> None:
    """Point the router at `primary` (and `canary` first), and return once it applied the change."""
    routes = Path(state["routes"])
    # Unique, not a counter: a failed rollout's routes are not in deployment.json, and a reused number
    # could match an acknowledgement the router wrote for them.
    generation = time.time_ns()
    tmp = routes.with_name(routes.name + ".tmp")
    tmp.write_text(json.dumps({"generation": generation, "primary": primary, "canary": canary}))
    os.replace(tmp, routes)
    ack = routes.with_name(routes.name + ".applied")
    deadline = time.monotonic() + ACK_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if ack.read_text().strip() == str(generation):
                state["generation"] = generation
                return
        except OSError:
            pass
        if not local.process_alive(state):
            raise TransientError(
                f"the router (pid {state.get('pid')}) is not running: {local._log_tail(Path(state['log']))}"
            )
        time.sleep(0.01)
    raise TransientError(f"the router did not apply new routes within {ACK_TIMEOUT_S:g}s")


def stop(state: dict[str, Any]) -> None:
    if is_router(state):
        local.stop_process_group(state)


def targets_path(state_dir: Path) -> Path:
    return state_dir / "prometheus-targets.json"


def publish_targets(state_dir: Path, addrs: list[str]) -> None:
    """The servers that take traffic, as a Prometheus file_sd file (`file_sd_configs`), so a Prometheus
    on this machine scrapes each new server as soon as it is routed (deploy.slo.prometheus)."""
    path = targets_path(state_dir)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps([{"targets": addrs, "labels": {}}]))
    os.replace(tmp, path)
