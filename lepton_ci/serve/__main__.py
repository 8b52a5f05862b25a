"""`python -m lepton_ci.serve`: load a model, serve it on V2, write the bound port for the deployer.

The port file is written only once every worker has loaded the model and accepts on the socket, so
a parent process that sees it can go straight to health checks. SIGTERM/SIGINT drain (readiness 503,
then no new connections, every accepted request answered) and exit 0; one arriving while the model
still loads exits 0 without serving. docs/serving.md describes every flag.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lepton_ci.errors import LeptonError
from lepton_ci.fsutil import atomic_write_bytes
from lepton_ci.serve.options import ServeOptions

TOKEN_ENV = "LEPTON_CI_SERVE_TOKEN"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be 0 (any free port) to 65535")
    return value


def parser() -> argparse.ArgumentParser:
    d = ServeOptions()
    p = argparse.ArgumentParser(
        prog="python -m lepton_ci.serve", description="Serve one model over the Open Inference Protocol (V2 REST)."
    )
    p.add_argument("--model-dir", required=True, type=Path, help="directory holding the model files")
    p.add_argument("--model-file", required=True, help="model file, relative to --model-dir")
    p.add_argument("--framework", default="sklearn", help="model framework (default: sklearn)")
    p.add_argument(
        "--device", help="torch and keras models: auto, cpu, cuda or cuda:N (default: $LEPTON_CI_DEVICE, else auto)"
    )
    p.add_argument("--name", required=True, help="model name in /v2/models/NAME")
    p.add_argument("--version", default="1", help="model version reported and accepted in URLs (default: 1)")
    p.add_argument("--host", default=d.host, help="address to bind, and only this one (default: 127.0.0.1)")
    p.add_argument("--port", type=_port, default=0, help="port; 0 picks a free one (default: 0)")
    p.add_argument("--port-file", type=Path, help="write the bound port here (atomically) once ready")
    p.add_argument("--workers", type=_positive, default=None, help="worker processes (default: one per CPU)")
    batching = p.add_mutually_exclusive_group()
    batching.add_argument("--batching", dest="batching", action="store_true", default=None, help="batch requests")
    batching.add_argument("--no-batching", dest="batching", action="store_false", help="one predict per request")
    p.add_argument("--max-batch-size", type=_positive, default=d.max_batch_size, help="rows per predict call")
    p.add_argument("--max-batch-wait-ms", type=_seconds, default=d.max_batch_wait_ms, help="wait for a batch to fill")
    p.add_argument("--max-queue", type=_positive, default=d.max_queue, help="waiting requests per worker before 503")
    p.add_argument("--max-body-bytes", type=_positive, default=d.max_body_bytes, help="request body limit")
    p.add_argument("--max-inflight-bytes", type=_positive, default=d.max_inflight_bytes, help="bodies being read")
    p.add_argument("--max-tensor-elements", type=_positive, default=d.max_tensor_elements, help="per input tensor")
    p.add_argument("--max-header-bytes", type=_positive, default=d.max_header_bytes, help="request line + headers")
    p.add_argument("--max-connections", type=_positive, default=d.max_connections, help="open connections per worker")
    p.add_argument("--backlog", type=_positive, default=d.backlog, help="listen backlog")
    p.add_argument("--header-timeout", type=_seconds, default=d.header_timeout, help="seconds to send the headers")
    p.add_argument("--body-timeout", type=_seconds, default=d.body_timeout, help="seconds to send the body")
    p.add_argument("--keep-alive-timeout", type=_seconds, default=d.keep_alive_timeout, help="idle connection")
    p.add_argument("--drain-delay", type=_seconds, default=d.drain_delay, help="SIGTERM: seconds ready=503 first")
    p.add_argument("--drain-timeout", type=_seconds, default=d.drain_timeout, help="SIGTERM: seconds to finish")
    p.add_argument(
        "--auth-token-file", type=Path, help=f"require this bearer token (default: ${TOKEN_ENV} when set; health open)"
    )
    p.add_argument("--access-log", action="store_true", help="one JSON line per request on stderr")
    return p


def options_from(args: argparse.Namespace) -> ServeOptions:
    token = None
    if args.auth_token_file is not None:
        token = args.auth_token_file.read_text().strip()
        if not token:
            raise LeptonError(f"--auth-token-file {args.auth_token_file} is empty")
    elif os.environ.get(TOKEN_ENV):
        token = os.environ[TOKEN_ENV].strip()
    return ServeOptions(
        host=args.host,
        port=args.port,
        workers=args.workers,
        batching=args.batching,
        max_batch_size=args.max_batch_size,
        max_batch_wait_ms=args.max_batch_wait_ms,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        max_tensor_elements=args.max_tensor_elements,
        max_inflight_bytes=args.max_inflight_bytes,
        max_header_bytes=args.max_header_bytes,
        max_connections=args.max_connections,
        backlog=args.backlog,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
        drain_delay=args.drain_delay,
        drain_timeout=args.drain_timeout,
        auth_token=token,
        access_log=args.access_log,
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from lepton_ci.serve.runner import Loaded, Supervisor, WorkerFailed, bind, log, serve_worker

    try:
        options = options_from(args)
    except (OSError, LeptonError) as exc:
        log(f"error: {getattr(exc, 'strerror', None) or exc}")
        return 2
    model_path = args.model_dir / args.model_file
    workers = options.worker_count()
    if args.device:  # the loaders read it (lepton_ci/frameworks/_formats.py), in every worker after the fork
        os.environ["LEPTON_CI_DEVICE"] = args.device

    def load() -> Loaded:
        from lepton_ci.frameworks import get_loader
        from lepton_ci.serve.app import V2App

        try:
            model = get_loader(args.framework).load(model_path)
        except LeptonError as exc:
            raise WorkerFailed(str(exc)) from None
        return Loaded(V2App(model, args.name, args.version, options, framework=args.framework))

    try:
        sock = bind(options.host, options.port, options.backlog)
    except OSError as exc:
        log(f"error: cannot listen on {options.host}:{options.port}: {exc.strerror or exc}")
        return 2
    port = sock.getsockname()[1]
    shown = f"[{options.host}]" if ":" in options.host else options.host

    def announce() -> None:
        if args.port_file:
            try:
                atomic_write_bytes(args.port_file, str(port).encode())
            except OSError as exc:
                log(f"error: cannot write the port file {args.port_file}: {exc.strerror or exc}")
                raise SystemExit(2) from None
        log(
            f"serving {args.name} version {args.version} ({args.framework}, {model_path}) at http://{shown}:{port}/v2 "
            f"with {workers} worker(s)"
        )

    if workers == 1:
        try:
            return serve_worker(sock, load, options, announce)
        except WorkerFailed as exc:
            log(f"error: {exc}")
            return 2
    supervisor = Supervisor(sock, workers, load, options)
    try:
        error = supervisor.start()
        if error is not None:
            log(f"error: {error}")
            return 2
        if not supervisor.stopping:
            announce()
        code = supervisor.supervise()
        log("stopped")
        return code
    finally:
        supervisor.cleanup()


if __name__ == "__main__":
    sys.exit(main())
