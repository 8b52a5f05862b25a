"""Runs the V2 app on uvicorn: one process, or a pre-forked set of workers sharing one socket.

Why pre-fork: a model whose predict holds the GIL can use one core per process only. The supervisor
binds the socket once and forks the workers, which all accept on it (the kernel spreads connections;
a worker that dies leaves the socket open for the others, and the supervisor starts a new one). Each
worker loads the model itself after the fork: forking a process that already runs a framework's
thread pools (OpenMP, CUDA) is unsafe.

Why our own signal handling: SIGTERM first turns readiness to 503 (load balancers stop sending),
keeps answering for `drain_delay`, then stops accepting and lets every accepted request finish
(`drain_timeout`), and the process exits 0. uvicorn's default would re-raise the signal after its
shutdown, so the exit status would say "killed".
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from lepton_ci.serve.metrics import MULTIPROC_ENV, worker_exited
from lepton_ci.serve.options import ServeOptions

RESTARTS_PER_MINUTE = 5  # a worker that keeps dying is a broken model, not bad luck


def log(message: str) -> None:
    print(f"lepton-ci serve: {message}", file=sys.stderr, flush=True)


def bind(host: str, port: int, backlog: int) -> socket.socket:
    """The listening socket, on exactly this address (port 0: a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _uvicorn_server(app: Any, options: ServeOptions, on_ready: Callable[[], None]) -> Any:
    """A uvicorn Server with our protocol, limits and signal handling."""
    import uvicorn

    from lepton_ci.serve.protocol import guarded_protocol

    try:
        import uvloop  # noqa: F401 - only probing that it is installed

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    # uvicorn logs every request refused for the connection cap as a warning; under overload that is
    # thousands of lines. Errors still show.
    logging.getLogger("uvicorn.error").setLevel(logging.ERROR)
    config = uvicorn.Config(
        app,
        loop=loop,
        http=guarded_protocol(options),
        ws="none",
        interface="asgi3",
        lifespan="on",
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=True,
        limit_concurrency=options.max_connections,
        backlog=options.backlog,
        timeout_keep_alive=max(1, round(options.keep_alive_timeout)),
        timeout_graceful_shutdown=max(1, round(options.drain_timeout)),
    )

    class Server(uvicorn.Server):
        """Drains as the module docstring says, and reports when it accepts."""

        _exit_at: float | None = None

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if not self.should_exit:
                on_ready()

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            old = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGTERM, signal.SIGINT)}
            try:
                yield
            finally:
                for sig, handler in old.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self._exit_at is not None:  # a second signal: stop waiting for the drain delay
                self.should_exit = True
                return
            app.state.ready = False
            self._exit_at = time.monotonic() + options.drain_delay
            if options.drain_delay <= 0:
                self.should_exit = True

        async def on_tick(self, counter: int) -> bool:
            if self._exit_at is not None and time.monotonic() >= self._exit_at:
                self.should_exit = True
            result: bool = await super().on_tick(counter)
            return result

    return Server(config)


@dataclass
class Loaded:
    """What a worker needs to serve: the app built around the loaded model."""

    app: Any


def serve_worker(
    sock: socket.socket, load: Callable[[], Loaded], options: ServeOptions, ready: Callable[[], None]
) -> int:
    """Load the model and serve on `sock` until a signal; 0 after a clean drain, 2 if loading failed."""
    stop_early = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop_early.set())
    loaded = load()
    if stop_early.is_set():
        return 0
    server = _uvicorn_server(loaded.app, options, ready)
    server.run(sockets=[sock])
    return 0


class ThreadedServer:
    """The server in a thread of this process (tests, library use); `port` is where it listens."""

    def __init__(self, app: Any, options: ServeOptions) -> None:
        self.app = app
        self.sock = bind(options.host, options.port, options.backlog)
        self.port: int = self.sock.getsockname()[1]
        self._ready = threading.Event()
        self.server = _uvicorn_server(app, options, self._ready.set)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="lepton-ci-serve", daemon=True
        )

    def start(self, timeout: float = 30.0) -> ThreadedServer:
        self.thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the model server did not start")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


class Supervisor:
    """Forks `workers` processes that serve on one socket, restarts a worker that dies, and drains them
    all on SIGTERM."""

    def __init__(self, sock: socket.socket, workers: int, load: Callable[[], Loaded], options: ServeOptions) -> None:
        self.sock = sock
        self.workers = workers
        self.load = load
        self.options = options
        self.children: dict[int, float] = {}  # pid -> start time
        self.stopping = False
        self.restarts: list[float] = []
        self.gave_up = False
        self.ready_r, self.ready_w = os.pipe()

    def _on_signal(self, signum: int, frame: Any) -> None:
        first = not self.stopping
        self.stopping = True
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM if first or signum == signal.SIGTERM else signal.SIGINT)

    def _spawn(self) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.close(self.ready_r)
                code = serve_worker(self.sock, self.load, self.options, self._report_ready)
            except WorkerFailed as exc:
                os.write(self.ready_w, f"E{exc}\n".encode()[:4000])
                code = 2
            except BaseException as exc:  # noqa: BLE001 - whatever happens, the child must not return into the parent's code
                with contextlib.suppress(Exception):
                    os.write(self.ready_w, f"E{type(exc).__name__}: {exc}\n".encode()[:4000])
            finally:
                sys.stderr.flush()
                os._exit(code)
        self.children[pid] = time.monotonic()

    def _report_ready(self) -> None:
        os.write(self.ready_w, f"R{os.getpid()}\n".encode())

    def start(self) -> str | None:
        """Fork the workers and wait until each accepts; the first worker's error, or None."""
        os.environ[MULTIPROC_ENV] = self.metrics_dir = tempfile.mkdtemp(prefix="lepton-metrics-")
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for _ in range(self.workers):
            self._spawn()
        ready: set[str] = set()
        buffer = b""
        while len(ready) < self.workers:
            if self.stopping:
                return None
            readable, _, _ = select.select([self.ready_r], [], [], 0.2)
            if readable:
                buffer += os.read(self.ready_r, 65536)
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.startswith(b"E"):
                        return line[1:].decode(errors="replace")
                    ready.add(line.decode())
            dead = self._reap(block=False)
            if dead and not self.stopping:
                # Read what the dead worker said before its exit, if anything.
                readable, _, _ = select.select([self.ready_r], [], [], 0.2)
                if readable:
                    buffer += os.read(self.ready_r, 65536)
                    for line in buffer.split(b"\n"):
                        if line.startswith(b"E"):
                            return line[1:].decode(errors="replace")
                return f"a worker exited with status {dead[0][1]} while loading the model"
        return None

    def _reap(self, block: bool) -> list[tuple[int, int]]:
        gone = []
        while self.children:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                break
            if pid == 0:
                break
            if pid in self.children:
                del self.children[pid]
                worker_exited(pid)
                gone.append((pid, os.waitstatus_to_exitcode(status)))
            if block:
                break
        return gone

    def supervise(self) -> int:
        """Until SIGTERM: keep `workers` alive. Then wait for every worker's drain."""
        deadline: float | None = None
        while self.children:
            if self.stopping and deadline is None:
                deadline = time.monotonic() + self.options.drain_delay + self.options.drain_timeout + 5
            if deadline is not None and time.monotonic() > deadline:
                for pid in list(self.children):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            for pid, code in self._reap(block=False):
                if self.stopping:
                    continue
                log(f"worker {pid} exited with status {code}; starting a new one")
                now = time.monotonic()
                self.restarts = [t for t in self.restarts if now - t < 60] + [now]
                if len(self.restarts) > RESTARTS_PER_MINUTE:
                    log(f"workers died {len(self.restarts)} times in a minute; stopping")
                    self.gave_up = True
                    self._on_signal(signal.SIGTERM, None)
                    continue
                self._spawn()
            # Drain readiness reports of restarted workers so the pipe never fills.
            readable, _, _ = select.select([self.ready_r], [], [], 0.2)
            if readable:
                os.read(self.ready_r, 65536)
        return 1 if self.gave_up else 0

    def cleanup(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while self.children:
            self._reap(block=True)
        shutil.rmtree(getattr(self, "metrics_dir", ""), ignore_errors=True)


class WorkerFailed(Exception):
    """The model could not be loaded in a worker: one line for the supervisor to print."""
