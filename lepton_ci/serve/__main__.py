"""`python -m lepton_ci.serve`: load a model, serve it on V2, write the bound port for the deployer.

The port file is written only once the model is loaded and the socket listens, so a parent process
that sees it can go straight to health checks. SIGTERM/SIGINT stop accepting, let in-flight
inferences finish (a few seconds at most) and exit 0; one arriving while the model still loads
exits 0 without serving.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from lepton_ci.errors import LeptonError
from lepton_ci.fsutil import atomic_write_bytes

DRAIN_S = 5.0  # below the local deployer's 10 s grace before SIGKILL


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be 0 (any free port) to 65535")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lepton_ci.serve", description="Serve one model over the Open Inference Protocol (V2 REST)."
    )
    p.add_argument("--model-dir", required=True, type=Path, help="directory holding the model files")
    p.add_argument("--model-file", required=True, help="model file, relative to --model-dir")
    p.add_argument("--framework", default="sklearn", help="model framework (default: sklearn)")
    p.add_argument("--name", required=True, help="model name in /v2/models/NAME")
    p.add_argument("--version", default="1", help="model version reported and accepted in URLs (default: 1)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind, and only this one (default: 127.0.0.1)")
    p.add_argument("--port", type=_port, default=0, help="port; 0 picks a free one (default: 0)")
    p.add_argument("--port-file", type=Path, help="write the bound port here (atomically) once ready")
    p.add_argument(
        "--workers", type=_positive, default=None, help="concurrent model calls (default: CPUs available, at most 4)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    stop_early = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop_early.set())  # until the server exists
    signal.signal(signal.SIGINT, lambda signum, frame: stop_early.set())

    from lepton_ci.frameworks import get_loader
    from lepton_ci.serve.server import log, make_server

    model_path = args.model_dir / args.model_file
    try:
        model = get_loader(args.framework).load(model_path)
    except LeptonError as exc:
        log(f"error: {exc}")
        return 2
    if stop_early.is_set():
        log("stopped before serving (signal while loading)")
        return 0
    try:
        server = make_server(model, args.name, args.version, args.host, args.port, workers=args.workers)
    except OSError as exc:
        log(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        return 2

    def stop(signum: int, frame: object) -> None:
        # shutdown() waits for serve_forever to return, so it cannot run in the thread that serves.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if stop_early.is_set():
        stop(signal.SIGTERM, None)
    port = server.server_address[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    if args.port_file:
        try:
            atomic_write_bytes(args.port_file, str(port).encode())
        except OSError as exc:
            log(f"error: cannot write the port file {args.port_file}: {exc.strerror or exc}")
            server.server_close()
            return 2
    log(
        f"serving {args.name} version {args.version} ({args.framework}, {model_path}) "
        f"at http://{shown}:{port}/v2 with {server.workers} worker(s)"
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
    drained = server.drain(DRAIN_S)
    log("stopped" if drained else f"stopped; in-flight requests cut off after {DRAIN_S:g}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
