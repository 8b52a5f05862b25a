"""`train.distributed`: the training command launched under torchrun, one process per rank.

torchrun (torch.distributed.run) starts `nproc_per_node` workers on each node and handles rendezvous and
restarts; lepton-ci adds what a CI record needs. Each worker is `python -m lepton_ci.rank -- /bin/sh -c
COMMAND` (torchrun's `--no-python`), and that small wrapper:

- keeps every rank's output in `<run dir>/ranks/rank-<N>.log` (and passes it on to torchrun's own output),
- writes the rank's exit code to `rank-<N>.exit`, so a failed run names the rank that died first rather than
  the ranks torchrun stopped afterwards,
- points every rank but 0 at its own `LEPTON_CI_RUN_DIR`, so `lepton_ci.log_metrics` from rank 0 alone
  becomes the run's metrics (the other ranks' logged values stay beside their logs).

The layout of torchrun's own `--log-dir` changes between torch releases; this one is lepton-ci's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lepton_ci.errors import UserError

RANKS_DIR = "ranks"
TAIL_LINES = 5


def torchrun_argv(
    options: dict[str, Any], command: str, ranks_dir: Path, run_id: str, where: str, env: dict[str, str]
) -> list[str]:
    """The argv that runs `command` under torchrun with the `train.distributed` options."""
    if importlib.util.find_spec("torch") is None:
        raise UserError(
            "train.distributed needs PyTorch (torchrun): pip install 'lepton-ci[torch]'",
            where=where,
        )
    nnodes = str(options.get("nnodes", 1))
    argv = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={int(options.get('nproc_per_node', 1))}"]
    backend = options.get("rdzv_backend")
    endpoint = options.get("rdzv_endpoint")
    if nnodes == "1" and backend is None and endpoint is None:
        argv.append("--standalone")  # a local rendezvous on a free port: nothing to configure on one node
    else:
        if endpoint is None:
            raise UserError(f"train.distributed: nnodes {nnodes} needs rdzv_endpoint (HOST:PORT)", where=where)
        rdzv_id = options.get("rdzv_id") or env.get("CI_PIPELINE_ID") or env.get("GITHUB_RUN_ID") or run_id
        argv += [
            f"--nnodes={nnodes}",
            f"--rdzv-backend={backend or 'c10d'}",
            f"--rdzv-endpoint={endpoint}",
            f"--rdzv-id={rdzv_id}",
        ]
        if "node_rank" in options:
            argv.append(f"--node-rank={int(options['node_rank'])}")
    argv += [f"--max-restarts={int(options.get('max_restarts', 0))}", "--no-python"]
    argv += [sys.executable, "-m", "lepton_ci.rank", str(ranks_dir), "--", "/bin/sh", "-c", command]
    return argv


@dataclass
class RankFailure:
    rank: int
    code: int
    tail: list[str]
    log: Path


def rank_logs(ranks_dir: Path) -> list[Path]:
    return sorted(ranks_dir.glob("rank-*.log"), key=lambda p: int(p.stem.split("-")[1]))


def first_failure(ranks_dir: Path) -> RankFailure | None:
    """The rank that failed on its own (not stopped by torchrun after another one failed), earliest first."""
    failed: list[tuple[float, int, int]] = []
    for path in ranks_dir.glob("rank-*.exit"):
        try:
            info = json.loads(path.read_text())
            rank, code, stopped, at = int(info["rank"]), int(info["code"]), bool(info["stopped"]), float(info["at"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if code != 0 and not stopped:
            failed.append((at, rank, code))
    if not failed:
        return None
    _, rank, code = min(failed)
    log = ranks_dir / f"rank-{rank}.log"
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    return RankFailure(rank, code, [line.strip() for line in lines if line.strip()][-TAIL_LINES:], log)


def kill_leftovers(ranks_dir: Path) -> None:
    """SIGKILL what is left of each worker's process group once torchrun has exited (see lepton_ci.rank): a
    process that outlives the training step could wait for a later step of the same job and read its secrets."""
    for path in ranks_dir.glob("rank-*.pgid"):
        try:
            pgid = int(path.read_text())
        except (OSError, ValueError):
            continue
        if pgid > 1 and pgid != os.getpgid(0):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)


def rank_env_run_dir(run_dir: str, rank: str, ranks_dir: Path) -> str:
    """Rank 0 logs into the run's own directory; every other rank into its own (kept, not merged)."""
    if rank in ("", "0"):
        return run_dir
    own = ranks_dir / f"rank-{rank}"
    own.mkdir(parents=True, exist_ok=True)
    return str(own)


def env_for_rank(env: dict[str, str], ranks_dir: Path) -> dict[str, str]:
    from lepton_ci import tracking

    out = dict(env)
    if tracking.RUN_DIR_ENV in out:
        out[tracking.RUN_DIR_ENV] = rank_env_run_dir(out[tracking.RUN_DIR_ENV], out.get("RANK", ""), ranks_dir)
    return out
