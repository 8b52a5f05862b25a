#!/usr/bin/env python3
"""Serving the PyTorch and Keras examples with batching on, against calling the same model in-process.

    python3 benchmarks/serve_frameworks.py [--rounds 3] [--duration 10] [--connections 32]

Trains both examples (examples/torch-linear-grid, examples/keras-digits-cnn) in a temp dir with lepton-ci's
Python (`--lepton-python`, default the repository's .venv), serves each with `python -m lepton_ci.serve
--batching` (plus `--lepton-args`), and loads wrk (`-t1 -c32 --latency`) with one row per V2 JSON request.
In the same rounds, the loaded model (lepton_ci.frameworks.<fw>.load, what the server runs) is called
in-process on batches of 32 rows: the floor. After an untimed warm-up sample per model, each round runs
every (model, way) once, the order alternating each round; medians are reported in one table.

Target, for both models: served rows/s ≥ `--min-floor-ratio` (0.5) × in-process batch-32 rows/s, with no
non-2xx response or socket error. Exit status: 0 met, 1 missed, 2 setup error.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _bench import REPO_ROOT, SetupError, host_line, print_table, stop_process_group
from serve_vs_mlserver import START_TIMEOUT_S, WRK_LUA, Server, run_wrk, wait_lepton

EXAMPLES = REPO_ROOT / "examples"
MODELS = {
    "torch": {"example": "torch-linear-grid", "file": "model.pt2", "label": "PyTorch linear (.pt2)",
              "input": "x", "shape": [1, 1], "output": "y"},
    "keras": {"example": "keras-digits-cnn", "file": "model.keras", "label": "Keras digits CNN (.keras)",
              "input": "image", "shape": [1, 8, 8, 1], "output": "probs"},
}  # fmt: skip
FLOOR_BATCH = 32

# Run in lepton-ci's Python: load the model as the server does, time predict on 32-row batches.
FLOOR_CODE = """
import json, sys, time
import numpy as np
from lepton_ci.frameworks import get_loader
framework, path, name, shape, repeats = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), int(sys.argv[5])
model = get_loader(framework).load(path)
x = np.random.default_rng(0).random([32, *shape[1:]]).astype(np.float32)
for _ in range(5):
    model.predict({name: x}, None)
samples = []
for _ in range(3):
    t = time.perf_counter()
    for _ in range(repeats):
        model.predict({name: x}, None)
    samples.append(32 * repeats / (time.perf_counter() - t))
print(json.dumps({"rows_per_s": sorted(samples)[1]}))
"""


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lepton-python", type=Path, default=REPO_ROOT / ".venv" / "bin" / "python",
                    help="a Python with lepton-ci, torch and tensorflow (default: the repository's .venv)")
    ap.add_argument("--lepton-args", default="", help="extra server flags, shlex-split (e.g. \"--workers 2\")")
    ap.add_argument("--models", default="torch,keras", help="comma-separated: torch, keras")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-d", "--duration", type=float, default=10.0, help="seconds per wrk sample")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of the untimed warm-up sample")
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("-c", "--connections", type=int, default=32)
    ap.add_argument("--wrk-timeout", type=float, default=2.0)
    ap.add_argument("--rows-per-request", type=int, default=1, help="rows in each V2 request (default 1)")
    ap.add_argument("--floor-repeats", type=int, default=200, help="in-process batch-32 calls per floor sample")
    ap.add_argument("--min-floor-ratio", type=float, default=0.5)
    ap.add_argument("--json", type=Path, help="also write every sample and the medians here")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (models, server logs)")
    return ap.parse_args()


def train(python: Path, key: str, work: Path) -> Path:
    """Run the example's own train.py (as `lepton-ci train` would) and return its model file."""
    spec = MODELS[key]
    root = work / spec["example"]
    shutil.copytree(EXAMPLES / spec["example"], root,
                    ignore=shutil.ignore_patterns(".lepton", "metrics.json", "model.*"))  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "LEPTON_CI_DEVICE": "cpu", "LEPTON_CI_RUN_DIR": str(root / ".lepton"),
           "TF_CPP_MIN_LOG_LEVEL": "2"}  # fmt: skip
    proc = subprocess.run([str(python), "train.py"], cwd=root, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SetupError(f"training {spec['example']} failed:\n{proc.stderr[-2000:]}")
    return root / spec["file"]


def floor(python: Path, key: str, model: Path, repeats: int) -> float:
    spec = MODELS[key]
    args = [str(python), "-c", FLOOR_CODE, key, str(model), spec["input"], json.dumps(spec["shape"]), str(repeats)]
    proc = subprocess.run(args, capture_output=True, text=True, check=False, cwd=model.parent,
                          env={"PATH": "/usr/bin:/bin", "LEPTON_CI_DEVICE": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"})  # fmt: skip
    if proc.returncode != 0:
        raise SetupError(f"in-process {key} failed:\n{proc.stderr[-2000:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["rows_per_s"])


def request_body(key: str, rows: int) -> bytes:
    spec = MODELS[key]
    shape = [rows, *spec["shape"][1:]]
    count = 1
    for d in shape:
        count *= d
    data = [round(0.1 + 0.8 * (i % 7) / 7, 3) for i in range(count)]
    tensor = {"name": spec["input"], "shape": shape, "datatype": "FP32", "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


def start(python: Path, key: str, model: Path, work: Path, extra: list[str]) -> Server:
    port_file = work / f"{key}.port"
    cmd = [
        str(python), "-m", "lepton_ci.serve", "--model-dir", str(model.parent), "--model-file", model.name,
        "--framework", key, "--name", key, "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
        "--batching", *extra,
    ]  # fmt: skip
    return Server(f"lepton-ci ({key})", cmd, work / f"{key}.log", work, port_file)


def check_answer(server: Server, key: str, body: bytes) -> None:
    import urllib.request

    req = urllib.request.Request(server.url(f"/v2/models/{key}/infer"), data=body,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=60) as resp:
        answer = json.loads(resp.read())
    if answer["outputs"][0]["name"] != MODELS[key]["output"]:
        raise SetupError(f"{key}: unexpected answer {answer}")


def main() -> int:
    args = parse_args()
    wrk = shutil.which("wrk")
    if not wrk:
        print("error: wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    if not args.lepton_python.exists():
        print(f"error: --lepton-python {args.lepton_python} does not exist", file=sys.stderr)
        return 2
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    if not keys or any(k not in MODELS for k in keys):
        print(f"error: --models takes a comma-separated subset of {', '.join(MODELS)}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="lepton-serve-frameworks-"))
    servers: dict[str, Server] = {}
    try:
        models = {k: train(args.lepton_python, k, work) for k in keys}
        extra = shlex.split(args.lepton_args)
        for k in keys:
            servers[k] = start(args.lepton_python, k, models[k], work, extra)
        deadline = time.monotonic() + START_TIMEOUT_S
        luas = {}
        for k in keys:
            wait_lepton(servers[k], deadline)
            body = request_body(k, args.rows_per_request)
            check_answer(servers[k], k, body)
            luas[k] = work / f"{k}.lua"
            luas[k].write_text(WRK_LUA.format(body=body.decode()))
        served: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
        floors: dict[str, list[float]] = {k: [] for k in keys}
        for k in keys:  # untimed warm-up
            run_wrk(wrk, luas[k], servers[k].url(f"/v2/models/{k}/infer"), args, args.warmup)
        for r in range(args.rounds):
            order = keys if r % 2 == 0 else list(reversed(keys))
            for k in order:
                ways = ["served", "floor"] if r % 2 == 0 else ["floor", "served"]
                for way in ways:
                    if way == "served":
                        s = run_wrk(wrk, luas[k], servers[k].url(f"/v2/models/{k}/infer"), args, args.duration)
                        s["rows_per_s"] = s["requests_per_s"] * args.rows_per_request
                        served[k].append(s)
                        print(f"[round {r + 1}] {k} served: {s['rows_per_s']:.0f} rows/s "
                              f"p99 {s['p99_ms']:.1f} ms", file=sys.stderr)  # fmt: skip
                    else:
                        floors[k].append(floor(args.lepton_python, k, models[k], args.floor_repeats))
                        print(f"[round {r + 1}] {k} in-process: {floors[k][-1]:.0f} rows/s", file=sys.stderr)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        for s in servers.values():
            stop_process_group(s.proc)
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\n{host_line()}; wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, {args.rows_per_request} row(s) per request, "
          f"{args.rounds} rounds, medians\n")  # fmt: skip
    rows, ok, summary = [], True, {}
    for k in keys:
        rps = statistics.median(s["rows_per_s"] for s in served[k])
        p50 = statistics.median(s["p50_ms"] for s in served[k])
        p99 = statistics.median(s["p99_ms"] for s in served[k])
        errors = sum(1 for s in served[k] if s["failed"])
        base = statistics.median(floors[k])
        ratio = rps / base if base else 0.0
        met = ratio >= args.min_floor_ratio and errors == 0
        ok &= met
        summary[k] = {"served_rows_per_s": rps, "p50_ms": p50, "p99_ms": p99, "in_process_rows_per_s": base,
                      "ratio": ratio, "samples_with_errors": errors, "met": met}  # fmt: skip
        rows.append([f"{MODELS[k]['label']}: served, batching on", f"{rps:,.0f}", f"{p50:.2f}", f"{p99:.2f}",
                     f"{ratio:.2f}", str(errors)])  # fmt: skip
        rows.append([f"{MODELS[k]['label']}: in-process, batches of {FLOOR_BATCH}", f"{base:,.0f}", "", "", "1.00",
                     ""])  # fmt: skip
    print_table(["model / way", "rows/s", "p50 ms", "p99 ms", "ratio", "samples with errors"], rows)
    print(f"\ntarget: served rows/s ≥ {args.min_floor_ratio:g} × in-process batch-{FLOOR_BATCH} rows/s, no errors: "
          f"{'met' if ok else 'MISSED'}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"served": served, "floors": floors, "summary": summary}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
