#!/usr/bin/env python3
"""What `lepton-ci train` adds to a training run, and what logging one metric costs.

    python3 benchmarks/train_overhead.py [--runs 9] [--lepton PATH]

1. Fixed overhead: a minimal project whose training command is `python train.py` (logs one metric with
   `lepton_ci.log_metrics`, writes metrics.json and a 1 MiB model file) is run bare and through
   `lepton-ci train` (which captures git, params, the environment and GPUs, hashes the artifact, merges the
   metrics and writes run.json), interleaved round-robin after a warm-up, fresh processes each time. The
   overhead is median(wrapped) − median(bare).
2. Per-metric cost: in lepton-ci's Python, `Tracker.log(name, value, step)` (the buffered helper the Keras
   callback and the PyTorch helper use) timed over `--calls` calls, flushes included; also
   `lepton_ci.log_metrics` (one locked file rewrite per call) for context.

Targets: overhead ≤ `--max-overhead` (0.3 s); Tracker.log ≤ `--max-log-us` (10 µs) per metric.
Exit status: 0 met, 1 missed, 2 setup error.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _bench import SetupError, add_common_arguments, find_lepton, host_line, print_table, time_interleaved

TRAIN_PY = """\
import json, os
import lepton_ci
lepton_ci.log_metrics({"loss": 0.5})
json.dump({"eval": {"accuracy": 0.9}}, open("metrics.json", "w"))
with open("model.bin", "wb") as f:
    f.write(os.urandom(1 << 20))
"""

LEPTON_YML = """\
version: 1
model:
  name: overhead
  file: model.bin
train:
  command: {python} train.py
  metrics: [metrics.json]
  artifacts: [model.bin]
"""

LOG_COST = """
import json, sys, time, tempfile, os
os.environ["LEPTON_CI_RUN_DIR"] = tempfile.mkdtemp()
from lepton_ci.frameworks.tracker import Tracker
import lepton_ci
calls, slow_calls = int(sys.argv[1]), int(sys.argv[2])
t = Tracker()
samples = []
for _ in range(5):
    start = time.perf_counter()
    for i in range(calls):
        t.log("train.loss", 0.25, i)
    t.flush()
    samples.append((time.perf_counter() - start) / calls * 1e6)
start = time.perf_counter()
for i in range(slow_calls):
    lepton_ci.log_metrics({"train.loss": 0.25}, step=i)
slow = (time.perf_counter() - start) / slow_calls * 1e6
print(json.dumps({"tracker_us": sorted(samples)[2], "log_metrics_us": slow}))
"""


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(ap, runs=9)
    ap.add_argument("--calls", type=int, default=200_000, help="Tracker.log calls per sample")
    ap.add_argument("--max-overhead", type=float, default=0.3, help="seconds")
    ap.add_argument("--max-log-us", type=float, default=10.0, help="microseconds per metric")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    try:
        lepton = find_lepton(args.lepton)
        python = lepton.parent / "python"
        if not python.exists():
            raise SetupError(f"no python beside {lepton}")
        with tempfile.TemporaryDirectory(prefix="lepton-train-overhead-") as tmp:
            root = Path(tmp)
            (root / "train.py").write_text(TRAIN_PY)
            (root / "lepton.yml").write_text(LEPTON_YML.format(python=python))
            subprocess.run(["git", "init", "-q"], cwd=root, check=True)
            samples = time_interleaved(
                {"bare": [str(python), "train.py"], "lepton-ci train": [str(lepton), "train"]},
                runs=args.runs, cwd=root, warmup=args.warmup,
            )  # fmt: skip
            run = json.loads((root / ".lepton" / "run.json").read_text())
            if run["metrics"].get("loss") != 0.5:
                raise SetupError(f"run.json lacks the logged metric: {run['metrics']}")
        proc = subprocess.run([str(python), "-c", LOG_COST, str(args.calls), "2000"], capture_output=True, text=True,
                              check=False)  # fmt: skip
        if proc.returncode != 0:
            raise SetupError(f"metric logging timing failed:\n{proc.stderr[-2000:]}")
        cost = json.loads(proc.stdout.strip().splitlines()[-1])
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bare, wrapped = statistics.median(samples["bare"]), statistics.median(samples["lepton-ci train"])
    overhead = wrapped - bare
    print(f"\n{host_line()}; {args.runs} interleaved runs after {args.warmup} warm-up, medians\n")
    print_table(
        ["measure", "value", "target", "met"],
        [
            ["bare `python train.py`", f"{bare:.3f} s", "", ""],
            ["`lepton-ci train` (same command)", f"{wrapped:.3f} s", "", ""],
            ["train wrapper overhead", f"{overhead:.3f} s", f"≤ {args.max_overhead:g} s",
             "yes" if overhead <= args.max_overhead else "NO"],
            ["Tracker.log, one metric", f"{cost['tracker_us']:.2f} µs", f"≤ {args.max_log_us:g} µs",
             "yes" if cost["tracker_us"] <= args.max_log_us else "NO"],
            ["lepton_ci.log_metrics, one call (unbuffered, context)", f"{cost['log_metrics_us']:.0f} µs", "", ""],
        ],
    )  # fmt: skip
    ok = overhead <= args.max_overhead and cost["tracker_us"] <= args.max_log_us
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
