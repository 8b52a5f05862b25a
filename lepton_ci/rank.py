"""One torchrun worker: `python -m lepton_ci.rank RANKS_DIR -- COMMAND...` (see lepton_ci/distributed.py).

Runs COMMAND with this rank's environment, copies its output line by line to `RANKS_DIR/rank-<RANK>.log` and
to stdout (torchrun's own output), and records `rank-<RANK>.exit` ({rank, code, stopped, at}). When torchrun
stops the worker group (SIGTERM after another rank failed), the command is stopped too and the exit file
says `stopped`, so the report names the rank that failed first. Standard library only: it starts once per
rank and must start fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m lepton_ci.rank RANKS_DIR -- COMMAND...", file=sys.stderr)
        return 2
    from lepton_ci.distributed import env_for_rank

    ranks_dir = Path(argv[0])
    ranks_dir.mkdir(parents=True, exist_ok=True)
    rank = os.environ.get("RANK", "0")
    env = env_for_rank(dict(os.environ), ranks_dir)
    # torchrun starts each worker (this process) as the leader of its own process group and stops it with
    # killpg, so the command stays in this group: it is stopped with it. The group id is kept for lepton-ci,
    # which kills what is left of the group after the run (a worker torchrun could not stop in time).
    (ranks_dir / f"rank-{rank}.pgid").write_text(str(os.getpgid(0)))
    proc = subprocess.Popen(argv[2:], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    stopped = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopped
        stopped = True
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)  # when only this process was signalled; killpg already reached the command

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    fd = os.open(ranks_dir / f"rank-{rank}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as log:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            log.write(line)
            log.flush()
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()
    code = proc.wait()
    code = 128 - code if code < 0 else code  # killed by a signal: the shell's convention
    (ranks_dir / f"rank-{rank}.exit").write_text(
        json.dumps({"rank": int(rank), "code": code, "stopped": stopped, "at": time.time()})
    )
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
