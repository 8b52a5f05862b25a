"""The train step: run the user's command, then record everything needed to trust its result.

The command's output streams live to the terminal and into train.log. The record is written even when
the command fails or times out, so a CI job can still report what happened.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lepton_ci import tracking
from lepton_ci.config import Config
from lepton_ci.environment import capture as capture_environment
from lepton_ci.errors import StepFailed, UserError
from lepton_ci.fsutil import sha256_file
from lepton_ci.gitio import git_info
from lepton_ci.gpu import GpuSampler, require_gpus
from lepton_ci.metrics import ParsedMetrics, load_metrics_file
from lepton_ci.records import RunRecord, artifacts_digest
from lepton_ci.secrets import scrubbed_environ
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
    """`--param key=value` pairs; values are read as YAML scalars (lepton.yml's rules, through the one
    bounded loader) so 0.5 is a number and true a bool; a value that is not YAML stays a string."""
    from lepton_ci.yamlsafe import YamlError, YamlLimitError, load

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--param {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = load(value, f"--param {key.strip()}", yaml12=False) if value.strip() else ""
        except YamlLimitError:
            raise
        except YamlError:
            out[key.strip()] = value
    return out


def _expand(config: Config, key: str, patterns: list[str], kind: str) -> list[tuple[str, Path]]:
    """Expand globs relative to the config dir into (relative path, absolute path), sorted, unique.

    Every match must resolve (symlinks followed) inside the project directory: artifacts are copied into
    the registry and data files are hashed into the record, so `../x`, `/etc/...` or a link pointing out
    of the checkout would publish files the project does not own (a pull request could name the runner's
    secrets). Such a pattern is a UserError naming it and its line."""
    found: dict[str, Path] = {}
    root = config.root.resolve()
    for i, pattern in enumerate(patterns):
        matches = sorted(glob.glob(str(config.resolve(pattern)), recursive=True))
        files = [Path(m) for m in matches if Path(m).is_file()]
        if not files:
            raise UserError(f"{kind} pattern {pattern!r} matched no file", where=config.where("train", key, i))
        for f in files:
            target = f.resolve()
            if not target.is_relative_to(root):
                link = f" (which resolves to {target})" if target != Path(os.path.abspath(f)) else ""
                raise UserError(
                    f"train.{key}[{i}]: {kind} pattern {pattern!r} matches {f}{link}, outside the project "
                    f"directory {root}; only files inside it can be recorded",
                    where=config.where("train", key, i),
                )
            found[target.relative_to(root).as_posix()] = f
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
    # 0600 like the records: a training log can hold whatever the command printed (paths, tokens).
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as log:
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


def run_command(
    command: str | list[str],
    cwd: Path,
    env: dict[str, str],
    log_path: Path,
    timeout: float | None,
    quiet: bool = False,
    to_stderr: bool = False,
) -> tuple[int, bool, float]:
    """Run a shell command (or an argv) in its own process group; returns (exit code, timed out, seconds)."""
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command] if isinstance(command, str) else command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
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
    # Whatever the command left running in its process group goes too: a process that outlives the
    # training step could wait for a later step of the same job (the gate, holding the signing key) and
    # read its environment. A process that left the group (setsid) escapes this; separate jobs do not.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    reader.join(timeout=10)
    return proc.returncode, timed_out, time.monotonic() - start


STALE_SLACK_NS = 2_000_000_000  # coarse file-system timestamps


def written_since(path: Path, start_ns: int) -> bool:
    return path.stat().st_mtime_ns >= start_ns - STALE_SLACK_NS


def collect_metrics(config: Config, run_dir: Path, start_ns: int) -> tuple[dict[str, Any], list[str]]:
    """(metrics, notes): metrics logged through the library first, then each metrics file; a key seen
    twice must agree. The notes say which values were skipped (NaN, infinities, integers too large for
    a float) or ambiguous; they go into the record and onto stderr, never silently away.

    A metrics file older than the run is an error: gating on the previous run's numbers is the worst
    silent failure a gate can have.
    """
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    notes: list[str] = []
    sources: list[tuple[str, ParsedMetrics]] = []
    logged = run_dir / tracking.METRICS_FILE
    if logged.is_file():
        sources.append(("lepton_ci.log_metrics", load_metrics_file(logged, "lepton_ci.log_metrics")))
    for i, rel in enumerate(config.section("train").get("metrics") or []):
        path = config.resolve(rel)
        if not path.is_file():
            raise UserError(
                f"metrics file {rel!r} was not written by the training command",
                where=config.where("train", "metrics", i),
            )
        if not written_since(path, start_ns):
            raise UserError(
                f"metrics file {rel!r} is older than this run: the training command did not rewrite it",
                where=config.where("train", "metrics", i),
            )
        sources.append((rel, load_metrics_file(path, rel)))
    for name, parsed in sources:
        notes.extend(parsed.notes)
        for key, value in parsed.values.items():
            if key in merged and merged[key] != value:
                raise UserError(f"metric {key!r} is {merged[key]} in {origin[key]} but {value} in {name}")
            merged[key], origin[key] = value, name
    return merged, notes


def _launcher(
    config: Config,
    section: dict[str, Any],
    env: dict[str, str],
    run_dir: Path,
    run_id: str,
    workdir: Path,
    timeout: float | None,
    quiet: bool,
    to_stderr: bool,
) -> Callable[[], tuple[int, bool, float]]:
    """How the command runs: on this machine, under torchrun (train.distributed) or in a container (train.image).
    Everything a launch needs is checked here, before the clock starts."""
    log = run_dir / "train.log"
    command = section["command"]
    if "distributed" in section and "image" in section:
        raise UserError(
            "train.distributed and train.image cannot be combined: run torchrun inside the image's command instead",
            where=config.where("train", "distributed"),
        )
    if "image" in section:
        from lepton_ci.train_container import container_env, run_in_container

        inner = container_env(env, section)
        return lambda: run_in_container(
            section["image"],
            command,
            root=config.root,
            workdir=workdir,
            env=inner,
            log_path=log,
            timeout=timeout,
            gpus=section.get("gpus", 0),
            quiet=quiet,
            to_stderr=to_stderr,
        )
    if "distributed" in section:
        from lepton_ci.distributed import RANKS_DIR, torchrun_argv

        argv = torchrun_argv(
            section["distributed"] or {},
            command,
            run_dir / RANKS_DIR,
            run_id,
            config.where("train", "distributed"),
            env,
        )
        return lambda: run_command(argv, workdir, env, log, timeout, quiet, to_stderr)
    return lambda: run_command(command, workdir, env, log, timeout, quiet, to_stderr)


def _ranks(config: Config, record: RunRecord, run_dir: Path) -> Any:
    """Every rank's log and exit code into the record; the rank that failed first, if one did."""
    from lepton_ci.distributed import RANKS_DIR, first_failure, kill_leftovers, rank_logs

    ranks_dir = run_dir / RANKS_DIR
    kill_leftovers(ranks_dir)
    record.extra["ranks"] = [
        {"rank": int(p.stem.split("-")[1]), "log": str(p.relative_to(config.root))} for p in rank_logs(ranks_dir)
    ]
    failure = first_failure(ranks_dir)
    if failure is not None and record.exit["status"] == "failed":
        record.exit["code"] = failure.code
        record.exit["rank"] = failure.rank
    return failure


def train(
    config: Config,
    *,
    param_overrides: dict[str, Any] | None = None,
    timeout: float | None = None,
    output: Path | None = None,
    quiet: bool = False,
    to_stderr: bool = False,
) -> RunRecord:
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
        raise UserError(
            f"train.workdir {section.get('workdir')!r} is not a directory", where=config.where("train", "workdir")
        )

    env = scrubbed_environ(section.get("env_passthrough") or [])  # no signing key or tokens for user code
    env.update({str(k): _env_value(v) for k, v in (section.get("env") or {}).items()})
    env[tracking.RUN_DIR_ENV] = str(run_dir)
    env[tracking.PARAMS_ENV] = json.dumps(params)
    env["LEPTON_CI_RUN_ID"] = run_id
    for key, value in params.items():
        env["LEPTON_PARAM_" + "".join(c if c.isalnum() else "_" for c in str(key)).upper()] = _env_value(value)

    git = git_info(config.root)
    environment = capture_environment()
    require_gpus(section.get("gpus", 0), config.where("train", "gpus"), environment["gpus"])
    launch = _launcher(config, section, env, run_dir, run_id, workdir, timeout, quiet, to_stderr)
    started = utcnow()
    start_ns = time.time_ns()
    with GpuSampler(interval=float(section.get("gpu_sample_interval", 1))) as sampler:
        code, timed_out, seconds = launch()
    environment["gpu_usage"] = sampler.usage()
    record = RunRecord(
        run_id=run_id,
        model=config.model_name,
        git=git,
        command=section["command"],
        params=params,
        environment=environment,
        timing={"started": started, "finished": utcnow(), "duration_s": round(seconds, 3)},
        exit={
            "code": code,
            "status": "timed_out" if timed_out else ("succeeded" if code == 0 else "failed"),
            "log": str((run_dir / "train.log").relative_to(config.root)),
        },
    )
    failure = _ranks(config, record, run_dir) if "distributed" in section else None
    out_path = output or config.run_path
    if record.exit["status"] != "succeeded":
        record.write(out_path)
        record.write(run_dir / "run.json")
        if timed_out:
            raise StepFailed(
                f"training command timed out after {timeout:g}s and was stopped (log: {record.exit['log']})"
            )
        if failure is not None:
            tail = " | ".join(failure.tail) or "no output"
            raise StepFailed(
                f"rank {failure.rank} exited with code {failure.code}: {tail} "
                f"(log: {failure.log.relative_to(config.root)})"
            )
        raise StepFailed(f"training command exited with code {code} (log: {record.exit['log']})")

    logged_params = run_dir / tracking.PARAMS_FILE
    if logged_params.is_file():
        record.params = {**params, **json.loads(logged_params.read_text())}
    record.metrics, notes = collect_metrics(config, run_dir, start_ns)
    if notes:
        record.extra["notes"] = notes
        for note in notes:
            print(f"lepton-ci: warning: {note}", file=sys.stderr)
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
