"""The train step: run the user's command, then record everything needed to trust its result.

The command's output streams live to the terminal and into train.log. The record is written even when
the command fails or times out, so a CI job can still report what happened.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from lepton_ci import tracking
from lepton_ci.config import Config
from lepton_ci.environment import capture as capture_environment
from lepton_ci.errors import StepFailed, UserError
from lepton_ci.fsutil import sha256_file
from lepton_ci.gitio import git_info
from lepton_ci.metrics import load_metrics_file
from lepton_ci.records import RunRecord, artifacts_digest
from lepton_ci.timeutil import utcnow

KILL_GRACE_S = 5.0


def _env_value(value: Any) -> str:
    """Environment text for a config value: YAML/JSON spelling (true, not True; lists as JSON)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def parse_param_overrides(items: list[str]) -> dict[str, Any]:
    """`--param key=value` pairs; values are read as YAML scalars so 0.5 is a number and true a bool."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--param {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def _expand(config: Config, key: str, patterns: list[str], kind: str) -> list[tuple[str, Path]]:
    """Expand globs relative to the config dir into (relative path, absolute path), sorted, unique."""
    found: dict[str, Path] = {}
    for i, pattern in enumerate(patterns):
        matches = sorted(glob.glob(str(config.resolve(pattern)), recursive=True))
        files = [Path(m) for m in matches if Path(m).is_file()]
        if not files:
            raise UserError(f"{kind} pattern {pattern!r} matched no file", where=config.where("train", key, i))
        for f in files:
            try:
                rel = f.resolve().relative_to(config.root).as_posix()
            except ValueError:
                rel = str(f.resolve())
            found[rel] = f
    return sorted(found.items())


def _hash_files(files: list[tuple[str, Path]], with_size: bool) -> list[dict[str, Any]]:
    out = []
    for rel, path in files:
        entry: dict[str, Any] = {"path": rel, "sha256": sha256_file(path)}
        if with_size:
            entry["size"] = path.stat().st_size
        out.append(entry)
    return out


def _stream(proc: subprocess.Popen[bytes], log_path: Path, quiet: bool, to_stderr: bool) -> None:
    out = sys.stderr.buffer if to_stderr else sys.stdout.buffer
    with open(log_path, "wb") as log:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            log.write(line)
            if not quiet:
                out.write(line)
                out.flush()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_command(command: str, cwd: Path, env: dict[str, str], log_path: Path, timeout: float | None,
                quiet: bool = False, to_stderr: bool = False) -> tuple[int, bool, float]:
    """Run a shell command in its own process group; returns (exit code, timed out, seconds)."""
    start = time.monotonic()
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    except FileNotFoundError as exc:
        raise UserError(f"cannot run the training command in {cwd}: {exc.strerror}") from None
    reader = threading.Thread(target=_stream, args=(proc, log_path, quiet, to_stderr), daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
    except KeyboardInterrupt:
        _kill_group(proc)
        raise
    reader.join(timeout=10)
    return proc.returncode, timed_out, time.monotonic() - start


STALE_SLACK_NS = 2_000_000_000  # coarse file-system timestamps


def written_since(path: Path, start_ns: int) -> bool:
    return path.stat().st_mtime_ns >= start_ns - STALE_SLACK_NS


def collect_metrics(config: Config, run_dir: Path, start_ns: int) -> dict[str, Any]:
    """Metrics logged through the library first, then each metrics file; a key seen twice must agree.

    A metrics file older than the run is an error: gating on the previous run's numbers is the worst
    silent failure a gate can have.
    """
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    sources: list[tuple[str, dict[str, Any]]] = []
    logged = run_dir / tracking.METRICS_FILE
    if logged.is_file():
        sources.append(("lepton_ci.log_metrics", load_metrics_file(logged, "lepton_ci.log_metrics")))
    for i, rel in enumerate(config.section("train").get("metrics") or []):
        path = config.resolve(rel)
        if not path.is_file():
            raise UserError(f"metrics file {rel!r} was not written by the training command", where=config.where("train", "metrics", i))
        if not written_since(path, start_ns):
            raise UserError(f"metrics file {rel!r} is older than this run: the training command did not rewrite it",
                            where=config.where("train", "metrics", i))
        sources.append((rel, load_metrics_file(path, rel)))
    for name, values in sources:
        for key, value in values.items():
            if key in merged and merged[key] != value:
                raise UserError(f"metric {key!r} is {merged[key]} in {origin[key]} but {value} in {name}")
            merged[key], origin[key] = value, name
    return merged


def train(config: Config, *, param_overrides: dict[str, Any] | None = None, timeout: float | None = None,
          output: Path | None = None, quiet: bool = False, to_stderr: bool = False) -> RunRecord:
    """Run the training command. `to_stderr` keeps stdout clean for callers that print a report there."""
    section = config.section("train")
    if "command" not in section:
        raise UserError("no training command configured", where=config.where("train"))
    params = {**(section.get("params") or {}), **(param_overrides or {})}
    timeout = timeout if timeout is not None else section.get("timeout")
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)
    run_dir = config.root / ".lepton" / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    workdir = config.resolve(section.get("workdir", "."))
    if not workdir.is_dir():
        raise UserError(f"train.workdir {section.get('workdir')!r} is not a directory", where=config.where("train", "workdir"))

    env = dict(os.environ)
    env.update({str(k): _env_value(v) for k, v in (section.get("env") or {}).items()})
    env[tracking.RUN_DIR_ENV] = str(run_dir)
    env[tracking.PARAMS_ENV] = json.dumps(params)
    env["LEPTON_CI_RUN_ID"] = run_id
    for key, value in params.items():
        env["LEPTON_PARAM_" + "".join(c if c.isalnum() else "_" for c in str(key)).upper()] = _env_value(value)

    git = git_info(config.root)
    started = utcnow()
    start_ns = time.time_ns()
    code, timed_out, seconds = run_command(section["command"], workdir, env, run_dir / "train.log", timeout, quiet, to_stderr)
    record = RunRecord(
        run_id=run_id, model=config.model_name, git=git, command=section["command"], params=params,
        environment=capture_environment(),
        timing={"started": started, "finished": utcnow(), "duration_s": round(seconds, 3)},
        exit={"code": code, "status": "timed_out" if timed_out else ("succeeded" if code == 0 else "failed"),
              "log": str((run_dir / "train.log").relative_to(config.root))},
    )
    out_path = output or config.run_path
    if record.exit["status"] != "succeeded":
        record.write(out_path)
        record.write(run_dir / "run.json")
        if timed_out:
            raise StepFailed(f"training command timed out after {timeout:g}s and was stopped (log: {record.exit['log']})")
        raise StepFailed(f"training command exited with code {code} (log: {record.exit['log']})")

    logged_params = run_dir / tracking.PARAMS_FILE
    if logged_params.is_file():
        record.params = {**params, **json.loads(logged_params.read_text())}
    record.metrics = collect_metrics(config, run_dir, start_ns)
    artifacts = _expand(config, "artifacts", section.get("artifacts") or [], "artifact")
    stale = [rel for rel, path in artifacts if not written_since(path, start_ns)]
    if stale:
        record.extra["warnings"] = [f"artifact {rel} was not written by this run" for rel in stale]
        for warning in record.extra["warnings"]:
            print(f"lepton-ci: warning: {warning}", file=sys.stderr)
    record.artifacts = _hash_files(artifacts, with_size=True)
    record.artifacts_digest = artifacts_digest(record.artifacts) if record.artifacts else ""
    record.data = _hash_files(_expand(config, "data", section.get("data") or [], "data"), with_size=False)
    record.write(out_path)
    record.write(run_dir / "run.json")
    return record
