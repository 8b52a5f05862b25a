"""Every knob of the model server, with the defaults a production deployment should start from.

One dataclass so the command line, the deploy targets and the tests all name the same settings;
docs/serving.md explains each one and why its default is what it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass
class ServeOptions:
    """Limits and behaviour of one server (all worker processes share them)."""

    host: str = "127.0.0.1"
    port: int = 0
    # Worker processes, each with its own event loop, batcher and copy of the model: a model whose
    # predict holds the GIL can only use more than one core this way. None: one per available CPU.
    workers: int | None = None
    # Adaptive batching: None lets the model decide (on when its loader says it can batch).
    batching: bool | None = None
    max_batch_size: int = 32  # rows per predict call
    # Longest a request waits for others to join its batch; the batcher also never waits longer than
    # one model call takes, so this is the cap for expensive models.
    max_batch_wait_ms: float = 5.0
    # Requests waiting for the model in one worker; one more is answered 503 with Retry-After.
    max_queue: int = 256
    # Size limits, checked before the bytes are decoded or the tensors allocated.
    max_body_bytes: int = 32 * 1024 * 1024  # also the bound on a decompressed body
    max_tensor_elements: int = 16 * 1024 * 1024  # per input tensor, from its declared shape
    # Bytes of request bodies one worker reads or decodes at a time (a request's Content-Length, or
    # max_body_bytes when it is unknown); past it, 503. With two decode threads (app.py), this bounds
    # memory under any load.
    max_inflight_bytes: int = 128 * 1024 * 1024
    max_header_bytes: int = 64 * 1024  # request line plus headers
    # Connections one worker holds open; beyond it, requests are answered 503.
    max_connections: int = 2048
    backlog: int = 2048
    # Timeouts in seconds: a client must send its headers (and, once they are in, its body) within
    # these, and an idle keep-alive connection is closed after keep_alive_timeout.
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    # SIGTERM: readiness turns 503 at once, the server keeps answering for drain_delay seconds (so load
    # balancers stop routing to it), then stops accepting and waits up to drain_timeout for the
    # requests it accepted to get their responses.
    drain_delay: float = 0.0
    drain_timeout: float = 30.0
    # Bearer token required on every endpoint except the health checks; None: no auth.
    auth_token: str | None = field(default=None, repr=False)
    access_log: bool = False
    retry_after_s: int = 1

    def worker_count(self) -> int:
        return self.workers or available_cpus()


def model_args(
    model_dir: str, model_file: str, framework: str, name: str, version: int, host: str, port: int
) -> list[str]:
    """The `python -m lepton_ci.serve` flags naming the model and where to listen: one list for every caller
    (the local target's process, a serving image's CMD), so their command lines cannot drift apart."""
    return [
        "--model-dir",
        model_dir,
        "--model-file",
        model_file,
        "--framework",
        framework,
        "--name",
        name,
        "--version",
        str(version),
        "--host",
        host,
        "--port",
        str(port),
    ]
