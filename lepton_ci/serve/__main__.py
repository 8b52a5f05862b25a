"""`python -m lepton_ci.serve`: load a model, serve it on V2, write the bound port for the deployer.

The port file is written only once the model is loaded and the socket listens, so a parent process
that sees it can go straight to health checks.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from lepton_ci.errors import LeptonError
from lepton_ci.fsutil import atomic_write_bytes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lepton_ci.serve", description="Serve one model over the V2 inference protocol.")
    p.add_argument("--model-dir", required=True, type=Path)
    p.add_argument("--model-file", required=True)
    p.add_argument("--framework", default="sklearn")
    p.add_argument("--name", required=True)
    p.add_argument("--version", default="1")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", type=Path)
    args = p.parse_args(argv)

    from lepton_ci.frameworks import get_loader
    from lepton_ci.serve.server import log, make_server

    try:
        model = get_loader(args.framework).load(args.model_dir / args.model_file)
        server = make_server(model, args.name, args.version, args.host, args.port)
    except LeptonError as exc:
        log(f"error: {exc}")
        return 2
    except OSError as exc:
        log(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}")
        return 2
    port = server.server_address[1]

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.port_file:
        atomic_write_bytes(args.port_file, str(port).encode())
    log(f"serving {args.name} v{args.version} ({args.framework}) at http://{args.host}:{port}/v2")
    server.serve_forever()
    server.server_close()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
