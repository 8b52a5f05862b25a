"""Local deploy target: the model server as a detached process on 127.0.0.1, blue/green.

With port 0 (default) the new server starts on a fresh port beside the old one, is checked (ready,
metadata, smoke inference), and only then is the old one stopped: zero downtime, and a failed rollout
leaves the old server untouched. With a fixed port the old server must stop first; if the new one then
fails, the old version is started again on that port.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TypeGuard

from lepton_ci import v2client
from lepton_ci.deploy import slo
from lepton_ci.deploy.base import COPY_PREFIX, DeployFailed, DeploySpec
from lepton_ci.errors import UserError
from lepton_ci.records import Deployment
from lepton_ci.secrets import scrubbed_environ
from lepton_ci.serve.options import model_args
from lepton_ci.timeutil import utcnow

STOP_GRACE_S = 10.0


def _start_ticks(pid: int) -> str | None:
    """Process start time from /proc, so a recycled PID is never mistaken for our server."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


SERVER_PREFIX = ["-I", "-m", "lepton_ci.serve"]
# deploy.server keys -> the server's flags; each takes one number (docs/serving.md explains them).
SERVER_FLAGS = {
    "workers": "--workers",
    "max_batch_size": "--max-batch-size",
    "max_batch_wait_ms": "--max-batch-wait-ms",
    "max_queue": "--max-queue",
    "max_body_bytes": "--max-body-bytes",
    "max_connections": "--max-connections",
    "header_timeout": "--header-timeout",
    "keep_alive_timeout": "--keep-alive-timeout",
    "drain_delay": "--drain-delay",
    "drain_timeout": "--drain-timeout",
}
SERVER_SWITCHES = {"--batching", "--no-batching", "--access-log"}
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?")
_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")  # deploy.server.device -> --device


def server_args(settings: dict[str, Any]) -> list[str]:
    """The server flags for `deploy.server` (validated by the config schema)."""
    args: list[str] = []
    for key, flag in SERVER_FLAGS.items():
        if settings.get(key) is not None:
            args += [flag, str(settings[key])]
    if settings.get("batching") is not None:
        args.append("--batching" if settings["batching"] else "--no-batching")
    if settings.get("access_log"):
        args.append("--access-log")
    if settings.get("device"):
        args += ["--device", str(settings["device"])]
    return args


def server_command(
    model_dir: Path,
    model_file: str,
    framework: str,
    name: str,
    version: int,
    host: str,
    port: int,
    port_file: Path,
    extra: list[str] | None = None,
) -> list[str]:
    """The model server's argv. `-I` keeps the working directory, PYTHONPATH and user site out of its
    imports: a `joblib.py` in the checkout must not run inside the server that serves a blessed model."""
    return [
        sys.executable,
        *SERVER_PREFIX,
        *model_args(str(model_dir), model_file, framework, name, version, host, port),
        "--port-file",
        str(port_file),
        *(extra or []),
    ]


def is_server_command(cmd: Any) -> TypeGuard[list[str]]:
    """True for exactly the argv server_command builds: the fixed part, then only known flags with numbers."""
    if not (
        isinstance(cmd, list)
        and len(cmd) >= 20
        and all(isinstance(c, str) for c in cmd)
        and cmd[0] == sys.executable
        and cmd[1:4] == SERVER_PREFIX
        and cmd[4:19:2]
        == ["--model-dir", "--model-file", "--framework", "--name", "--version", "--host", "--port", "--port-file"]
    ):
        return False
    rest = cmd[20:]
    patterns = {flag: _NUMBER for flag in SERVER_FLAGS.values()} | {"--device": _DEVICE}
    while rest:
        if rest[0] in SERVER_SWITCHES:
            rest = rest[1:]
        elif len(rest) > 1 and rest[0] in patterns and patterns[rest[0]].fullmatch(rest[1]):
            rest = rest[2:]
        else:
            return False
    return True


def _is_our_server(pid: int) -> bool:
    """A pid from deployment.json is signalled only if that process is a lepton-ci model server."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"lepton_ci.serve" in argv


def remove_model_copy(state: dict[str, Any]) -> None:
    """Delete the private copy of the model a stopped server was serving (only one we made)."""
    copy = state.get("model_copy")
    if (
        isinstance(copy, str)
        and Path(copy).name.startswith(COPY_PREFIX)
        and Path(copy).parent == Path(tempfile.gettempdir())
    ):
        shutil.rmtree(copy, ignore_errors=True)


def process_alive(proc: dict[str, Any]) -> bool:
    pid = proc.get("pid")
    if not pid:
        return False
    ticks = _start_ticks(pid)
    return ticks is not None and ticks == proc.get("start_ticks")


def _log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class LocalTarget:
    name = "local"

    def _launch(self, spec: DeploySpec, port: int) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
        run_dir = spec.state_dir / "servers" / f"v{spec.version.version}-{int(time.time() * 1000)}"
        run_dir.mkdir(parents=True, exist_ok=True)
        port_file = run_dir / "port"
        log = run_dir / "server.log"
        host = spec.options.get("host", "127.0.0.1")
        if spec.model_dir is None:
            raise DeployFailed(
                "the local target serves a model directory; none was given", Deployment(target=self.name)
            )
        cmd = server_command(
            spec.model_dir,
            spec.model_file,
            spec.framework,
            spec.version.name,
            spec.version.version,
            host,
            port,
            port_file,
            server_args(spec.options.get("server") or {}),
        )
        proc = _spawn(cmd, log, os.O_TRUNC)
        info = {
            "pid": proc.pid,
            "start_ticks": _start_ticks(proc.pid),
            "command": cmd,
            "log": str(log),
            "port_file": str(port_file),
            "host": host,
            "model_copy": str(spec.model_dir) if spec.private_copy else None,
        }
        return proc, info

    def _wait_ready(self, proc: subprocess.Popen[bytes], info: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        port_file = Path(info["port_file"])
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return [
                    {
                        "check": "start",
                        "passed": False,
                        "detail": f"server exited with code {proc.returncode}: {_log_tail(Path(info['log']))}",
                    }
                ]
            if port_file.is_file() and port_file.read_text().strip().isdigit():
                info["port"] = int(port_file.read_text().strip())
                base = f"http://{info['host']}:{info['port']}"
                ready = v2client.check("ready", "GET", f"{base}/v2/health/ready")
                if ready["passed"]:
                    return [v2client.check("live", "GET", f"{base}/v2/health/live"), ready]
            time.sleep(0.05)
        return [
            {
                "check": "ready",
                "passed": False,
                "detail": f"not ready within {timeout:g}s: {_log_tail(Path(info['log']))}",
            }
        ]

    def _checks(self, spec: DeploySpec, info: dict[str, Any]) -> list[dict[str, Any]]:
        base = f"http://{info['host']}:{info['port']}/v2/models/{spec.version.name}"
        meta = v2client.check("metadata", "GET", base)
        checks = [meta]
        if meta["passed"]:
            body = spec.smoke_request or v2client.zeros_request(meta["response"] or {})
            smoke = v2client.check("smoke", "POST", f"{base}/infer", body)
            if smoke["passed"]:
                smoke["response"] = {"outputs": [o.get("name") for o in (smoke["response"] or {}).get("outputs", [])]}
            checks.append(smoke)
        meta["response"] = None
        return checks

    def _stop_process(self, proc: dict[str, Any]) -> None:
        if not process_alive(proc) or not _is_our_server(proc["pid"]):
            return
        stop_process_group(proc)

    def _try_start(self, spec: DeploySpec, port: int) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
        proc, info = self._launch(spec, port)
        health = self._wait_ready(proc, info, float(spec.options.get("ready_timeout", 60)))
        if all(h["passed"] for h in health):
            health += self._checks(spec, info)
        for h in health:
            if h.get("check") != "smoke":
                h.pop("response", None)
        ok = all(h["passed"] for h in health)
        if not ok:
            self._stop_process(info)
            remove_model_copy(info)
        return info, health, ok

    def deploy(self, spec: DeploySpec, current: Deployment | None) -> Deployment:
        port = int(spec.options.get("port", 0))
        guard = slo.settings(spec.options)
        use_router = guard is not None or spec.options.get("router_port") is not None
        if use_router and port != 0:
            raise UserError(
                "deploy.port must be 0 with deploy.slo or deploy.router_port: the old server keeps running "
                "beside the new one, and the router's port (deploy.router_port) is the stable endpoint"
            )
        running = current if current and current.status == "healthy" and process_alive(current.state) else None
        fixed_port_clash = running is not None and port != 0 and running.state.get("port") == port
        if fixed_port_clash and running is not None:
            self._stop_process(running.state)
        info, health, ok = self._try_start(spec, port)
        record = Deployment(
            target=self.name,
            model=spec.version.name,
            version=spec.version.version,
            digest=spec.version.digest,
            endpoint=f"http://{info['host']}:{info.get('port', port)}",
            status="healthy" if ok else "failed",
            health=health,
            state=info,
            created=utcnow(),
            previous=_summary(current),
        )
        if not ok:
            reason = next(h for h in health if not h["passed"])
            message = (
                f"deploy of {spec.version.name} v{spec.version.version} failed at {reason['check']}: "
                f"{reason.get('detail')}"
            )
            if fixed_port_clash and running is not None:
                message += (
                    "; the previous version was restarted"
                    if self._restart(running)
                    else "; the previous version could NOT be restarted"
                )
            elif running is not None:
                message += f"; v{running.version} keeps serving at {running.endpoint}"
            raise DeployFailed(message, record)
        if use_router:
            self._rollout(spec, record, running, guard)
        if running is not None and not fixed_port_clash:
            self._stop_process(running.state)
        if running is not None:
            remove_model_copy(running.state)
        return record

    def _rollout(
        self, spec: DeploySpec, record: Deployment, running: Deployment | None, guard: slo.Settings | None
    ) -> None:
        """Move the router to the new server; with deploy.slo, first as the canary in front of the old one
        (whose answers replace the canary's errors) for the watch, and back to the old one on a breach."""
        from lepton_ci.deploy import local_router

        info = record.state
        new_addr = f"{info['host']}:{info['port']}"
        old_addr = f"{running.state['host']}:{running.state['port']}" if running is not None else None
        recorded = (running.state.get("router") if running is not None else None) or None
        try:
            router = local_router.ensure(
                spec.state_dir,
                str(spec.options.get("host", "127.0.0.1")),
                int(spec.options.get("router_port") or 0),
                recorded,
            )
        except BaseException:
            self._stop_process(info)
            remove_model_copy(info)
            raise
        info["router"] = router
        info["server_endpoint"] = record.endpoint
        record.endpoint = f"http://{router['host']}:{router['port']}"
        if guard is None:
            local_router.route(router, new_addr)
            local_router.publish_targets(spec.state_dir, [new_addr])
            return
        source = slo.source_for(guard, f"{info['server_endpoint']}/metrics", spec.version.name, spec.version.version)
        local_router.publish_targets(spec.state_dir, [a for a in (old_addr, new_addr) if a])
        baseline = slo.read_baseline(source)
        local_router.route(router, old_addr or new_addr, canary=new_addr if old_addr else None)
        record.slo = slo.watch(guard, source, baseline=baseline)
        if record.slo["passed"]:
            local_router.route(router, new_addr)
            local_router.publish_targets(spec.state_dir, [new_addr])
            return
        if old_addr is not None:
            local_router.route(router, old_addr)
            local_router.publish_targets(spec.state_dir, [old_addr])
        self._stop_process(info)
        remove_model_copy(info)
        record.status = "failed"
        message = (
            f"deploy of {spec.version.name} v{spec.version.version} rolled back: the SLO watch saw "
            f"{record.slo['reason']}"
        )
        if running is not None:
            message += f"; v{running.version} keeps serving at {record.endpoint}"
        raise DeployFailed(message, record)

    def _restart(self, old: Deployment) -> bool:
        """Start the previous server again with its own arguments, only if they are the model server's:
        deployment.json is a file, and a command stored in it is not run as given."""
        cmd = old.state.get("command")
        if not is_server_command(cmd) or not isinstance(old.state.get("log"), str):
            return False
        port_file = Path(old.state["port_file"])
        port_file.unlink(missing_ok=True)
        proc = _spawn(cmd, Path(old.state["log"]), os.O_APPEND)
        old.state.update(pid=proc.pid, start_ticks=_start_ticks(proc.pid))
        return all(h["passed"] for h in self._wait_ready(proc, old.state, 60))

    def status(self, deployment: Deployment) -> Deployment:
        if deployment.status == "stopped":
            return deployment
        if not process_alive(deployment.state):
            deployment.status = "down"
            deployment.health = [
                {"check": "process", "passed": False, "detail": f"process {deployment.state.get('pid')} is not running"}
            ]
            return deployment
        router = deployment.state.get("router")
        if router:
            from lepton_ci.deploy import local_router

            if not local_router.is_router(router):
                deployment.status = "down"
                deployment.health = [
                    {"check": "router", "passed": False, "detail": f"router {router.get('pid')} is not running"}
                ]
                return deployment
        deployment.status, deployment.health = v2client.endpoint_health(deployment.endpoint, deployment.model)
        return deployment

    def stop(self, deployment: Deployment) -> Deployment:
        self._stop_process(deployment.state)
        if deployment.state.get("router"):
            from lepton_ci.deploy import local_router

            local_router.stop(deployment.state["router"])
        remove_model_copy(deployment.state)
        deployment.status = "stopped"
        deployment.health = []
        return deployment


def stop_process_group(proc: dict[str, Any]) -> None:
    """SIGTERM to a process group we started (the server drains), SIGKILL after STOP_GRACE_S. The caller
    has checked that the recorded pid is still the process it started."""
    pid = proc["pid"]
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and process_alive(proc):
        _reap(pid)
        time.sleep(0.05)
    if process_alive(proc):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        _reap(pid)


def _spawn(cmd: list[str], log: Path, mode: int) -> subprocess.Popen[bytes]:
    """Start a model server detached, logging to `log` (0600), in the log's directory (never the checkout:
    with -I nothing there is importable anyway) and with no signing key or forge token in its environment."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | mode, 0o600)
    with os.fdopen(fd, "wb") as out:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            env=scrubbed_environ(),
            cwd=log.parent,
        )


def _reap(pid: int) -> None:
    """Collect our own child if it has exited, so it does not linger as a zombie that looks alive."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _summary(d: Deployment | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {"version": d.version, "digest": d.digest, "endpoint": d.endpoint, "status": d.status, "created": d.created}
