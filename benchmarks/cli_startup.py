#!/usr/bin/env python3
"""Cold-start time of `lepton-ci --help` / `lepton-ci --version` against `dvc --version`.

Every sample is a fresh process (wall time via subprocess + time.perf_counter, output
captured). The commands run interleaved, round-robin, in one invocation, and the table
reports medians, so the lepton-ci / dvc ratio is robust to a noisy machine.

Targets (each must hold for both lepton-ci commands):
  * median wall time <= 0.15 s (absolute, --max-seconds)
  * median wall time <= 0.5 x median of `dvc --version` (--max-ratio)

Exit status: 0 all targets pass, 1 a target fails, 2 setup error (tool missing/failing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench  # noqa: E402


def interpreter_of(script: Path) -> str | None:
    """The Python a console-script entry point runs under (its shebang), if any."""
    try:
        with open(script, "rb") as fh:
            first = fh.readline().decode(errors="replace").strip()
    except OSError:
        return None
    if first.startswith("#!") and "python" in first:
        parts = first[2:].split()
        return parts[0] if parts else None
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench.add_common_arguments(ap, runs=15)
    ap.add_argument("--max-seconds", type=float, default=0.15, help="absolute target for lepton-ci (default 0.15)")
    ap.add_argument("--max-ratio", type=float, default=0.5, help="target lepton-ci / dvc ratio (default 0.5)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the informational `python -c pass` row")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be >= 1")

    try:
        lepton = _bench.find_lepton(args.lepton)
        dvc = _bench.find_dvc(args.dvc)
    except _bench.SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    commands: dict[str, list[str]] = {
        "lepton-ci --help": [str(lepton), "--help"],
        "lepton-ci --version": [str(lepton), "--version"],
        "dvc --version": [str(dvc), "--version"],
    }
    py = interpreter_of(lepton)
    if py and not args.no_baseline:
        # Context only: the floor any Python CLI pays (interpreter + site) on this machine.
        commands["python -c pass (floor)"] = [py, "-c", "pass"]

    print(f"lepton-ci: {lepton}  ({_bench.tool_version([str(lepton), '--version'])})")
    print(f"dvc:       {dvc}  ({_bench.tool_version([str(dvc), '--version'])})")
    print(f"host:      {_bench.host_line()}")
    print(f"runs:      {args.runs} per command, interleaved, after {args.warmup} warm-up round(s)\n")

    try:
        samples = _bench.time_interleaved(commands, runs=args.runs, warmup=args.warmup)
    except _bench.SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    stats = {name: _bench.summarize(xs) for name, xs in samples.items()}
    dvc_med = stats["dvc --version"]["median"]

    rows = []
    for name, st in stats.items():
        rows.append(
            [
                name,
                f"{st['median']:.3f}",
                f"{st['min']:.3f}",
                f"{st['max']:.3f}",
                f"{st['median'] / dvc_med:.2f}x",
            ]
        )
    _bench.print_table(["command", "median s", "min s", "max s", "vs dvc --version"], rows)
    print()

    checks = []
    for name in ("lepton-ci --help", "lepton-ci --version"):
        med = stats[name]["median"]
        checks.append(
            (f"{name}: median <= {args.max_seconds:.2f} s", f"{med:.3f} s", med <= args.max_seconds)
        )
        ratio = med / dvc_med
        checks.append(
            (f"{name}: <= {args.max_ratio:.2f}x dvc --version", f"{ratio:.2f}x", ratio <= args.max_ratio)
        )
    _bench.print_table(
        ["target", "observed", "result"],
        [[t, obs, "PASS" if ok else "FAIL"] for t, obs, ok in checks],
    )
    failed = [t for t, _, ok in checks if not ok]
    print()
    if failed:
        print(f"FAIL: {len(failed)} of {len(checks)} target(s) missed")
        return 1
    print(f"PASS: all {len(checks)} targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
