#!/usr/bin/env python3
"""`lepton-ci metrics diff HEAD --json` against `dvc metrics diff HEAD --json`.

Builds a throw-away git repository (branch `main`) with --files metrics files (default 50:
mostly JSON, a few YAML and TOML, all formats DVC reads), each holding --keys nested numeric
metrics (default 200, 2-3 levels deep, floats and ints). The files are declared both in
`dvc.yaml` (top-level `metrics:`) and in `lepton.yml` (`train.metrics`), committed together
with `.dvc/` after `dvc init`, and then the workspace values are changed without committing:
most files get some values changed, a few files stay identical, and a few files gain one
metric and lose another (so each tool's handling of a key present on one side only is
exercised).

Both commands compare HEAD with the workspace. They run interleaved, round-robin, and the
table reports medians. Before timing, both JSON outputs are parsed and every
(path, metric) old/new/diff value is compared; any difference or a metric present in only
one output fails the benchmark.

Target: lepton-ci >= 10x faster than dvc (median dvc / median lepton-ci, --min-speedup).
Exit status: 0 pass, 1 target missed or outputs disagree, 2 setup error.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench  # noqa: E402

GROUPS = ("train", "eval", "test", "val")
SUBGROUP_LEAVES = ("precision", "recall", "f1", "auc", "support", "tp", "fp", "fn", "loss", "ece")


# --------------------------------------------------------------------------- generation


def make_metrics(n_keys: int, rng: random.Random) -> dict[str, Any]:
    """A nested dict with exactly n_keys numeric leaves, 2-3 levels deep.

    Layout per group: `group.m_XX` (2 levels) and `group.class_K.<leaf>` (3 levels).
    Values are floats with 6 decimals (written in plain decimal so every YAML/TOML
    parser reads them as floats) and some integers (counts).
    """
    data: dict[str, Any] = {}
    remaining = n_keys
    gi = 0
    while remaining > 0:
        group = GROUPS[gi % len(GROUPS)] + ("" if gi < len(GROUPS) else f"_{gi // len(GROUPS)}")
        gi += 1
        budget = min(remaining, math.ceil(n_keys / len(GROUPS)))
        remaining -= budget
        g: dict[str, Any] = {}
        flat = budget * 2 // 5  # ~40% two-level leaves, the rest three-level
        for i in range(flat):
            g[f"m_{i:02d}"] = round(rng.uniform(0.0, 1.0), 6)
        left = budget - flat
        k = 0
        while left > 0:
            cls: dict[str, Any] = {}
            for leaf in SUBGROUP_LEAVES[: min(left, len(SUBGROUP_LEAVES))]:
                if leaf in ("support", "tp", "fp", "fn"):
                    cls[leaf] = rng.randint(0, 10_000)
                else:
                    cls[leaf] = round(rng.uniform(0.0, 1.0), 6)
            left -= len(cls)
            g[f"class_{k}"] = cls
            k += 1
        data[group] = g
    return data


def fmt_num(v: Any) -> str:
    if isinstance(v, bool):  # not generated, but never emit bools as numbers
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return f"{v:.6f}"


def to_json(d: dict[str, Any]) -> str:
    return json.dumps(d, indent=2) + "\n"


def to_yaml(d: dict[str, Any], indent: int = 0) -> str:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out.append(" " * indent + f"{k}:\n" + to_yaml(v, indent + 2))
        else:
            out.append(" " * indent + f"{k}: {fmt_num(v)}\n")
    return "".join(out)


def to_toml(d: dict[str, Any], prefix: str = "") -> str:
    scalars = [(k, v) for k, v in d.items() if not isinstance(v, dict)]
    tables = [(k, v) for k, v in d.items() if isinstance(v, dict)]
    out = []
    if scalars:
        if prefix:
            out.append(f"[{prefix}]\n")
        out.extend(f"{k} = {fmt_num(v)}\n" for k, v in scalars)
        out.append("\n")
    for k, v in tables:
        out.append(to_toml(v, f"{prefix}.{k}" if prefix else k))
    return "".join(out)


def write_metrics(path: Path, data: dict[str, Any]) -> None:
    if path.suffix == ".json":
        text = to_json(data)
    elif path.suffix in (".yaml", ".yml"):
        text = to_yaml(data)
    elif path.suffix == ".toml":
        text = to_toml(data)
    else:
        raise ValueError(path)
    path.write_text(text)


def leaf_paths(d: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out.extend(leaf_paths(v, prefix + (k,)))
        else:
            out.append(prefix + (k,))
    return out


def get_in(d: dict[str, Any], path: tuple[str, ...]) -> Any:
    for k in path[:-1]:
        d = d[k]
    return d[path[-1]]


def set_in(d: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for k in path[:-1]:
        d = d.setdefault(k, {})
    d[path[-1]] = value


def del_in(d: dict[str, Any], path: tuple[str, ...]) -> None:
    for k in path[:-1]:
        d = d[k]
    del d[path[-1]]


def file_names(n_files: int) -> list[str]:
    """Mostly JSON; every 10th YAML and every 10th (offset 5) TOML."""
    names = []
    for i in range(n_files):
        ext = "yaml" if i % 10 == 3 else "toml" if i % 10 == 7 else "json"
        names.append(f"metrics/m{i:02d}.{ext}")
    return names


def git(repo: Path, *args: str) -> None:
    proc = _bench.run_capture(["git", *args], cwd=repo)
    if proc.returncode != 0:
        raise _bench.SetupError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")


def build_repo(root: Path, dvc: Path, n_files: int, n_keys: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    names = file_names(n_files)
    (root / "metrics").mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "bench")
    git(root, "config", "user.email", "bench@example.invalid")
    git(root, "config", "commit.gpgsign", "false")

    committed: dict[str, dict[str, Any]] = {}
    for name in names:
        data = make_metrics(n_keys, rng)
        committed[name] = data
        write_metrics(root / name, data)

    (root / "dvc.yaml").write_text("metrics:\n" + "".join(f"  - {n}\n" for n in names))
    (root / "lepton.yml").write_text(
        "model:\n  name: bench\ntrain:\n  command: \"true\"\n  metrics:\n"
        + "".join(f"    - {n}\n" for n in names)
    )
    proc = _bench.run_capture([str(dvc), "init", "-q"], cwd=root)
    if proc.returncode != 0:
        raise _bench.SetupError(f"dvc init failed: {proc.stderr.strip() or proc.stdout.strip()}")
    _bench.run_capture([str(dvc), "config", "core.analytics", "false"], cwd=root)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "baseline metrics")

    # Workspace changes, not committed.
    counts = {"files": n_files, "files_changed": 0, "values_changed": 0, "added": 0, "removed": 0}
    for i, name in enumerate(names):
        data = json.loads(json.dumps(committed[name]))  # deep copy
        if i % 10 == 9:
            continue  # ~10% of files unchanged: must not appear in either output
        counts["files_changed"] += 1
        paths = leaf_paths(data)
        for p in rng.sample(paths, k=max(1, len(paths) * 3 // 5)):  # ~60% of values change
            old = get_in(data, p)
            if isinstance(old, int):
                new = old + rng.choice([-1, 1]) * rng.randint(1, 50)
            else:
                new = round(old + rng.uniform(-0.05, 0.05), 6)
                if new == old:
                    new = round(old + 0.000001, 6)
            set_in(data, p, new)
            counts["values_changed"] += 1
        if i % 10 == 4:
            # One metric removed and one added: present on one side only.
            del_in(data, paths[0])
            set_in(data, (paths[1][0], "new_metric"), round(rng.uniform(0, 1), 6))
            counts["added"] += 1
            counts["removed"] += 1
        write_metrics(root / name, data)
    return counts


# --------------------------------------------------------------------------- verification


def normalize(out: dict[str, Any], tool: str) -> dict[tuple[str, str], dict[str, Any]]:
    """{(path, metric): {"old", "new", "diff"}}, missing values as None.

    DVC: {path: {metric: {"old", "new"[, "diff"]}}} (no "diff" when a side is missing).
    lepton-ci: {"a", "b", "files": {path: {metric: {"old", "new", "diff", "pct"}}}, "notes"}.
    """
    files = out.get("files") if tool == "lepton-ci" else out
    if not isinstance(files, dict):
        raise ValueError(f"{tool}: JSON has no files mapping: {str(out)[:200]}")
    res = {}
    for path, metrics in files.items():
        if not isinstance(metrics, dict):
            raise ValueError(f"{tool}: {path}: expected a mapping, got {metrics!r:.100}")
        for metric, vals in metrics.items():
            res[(path.replace("\\", "/"), metric)] = {
                "old": vals.get("old"),
                "new": vals.get("new"),
                "diff": vals.get("diff"),
            }
    return res


def same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def compare(
    dvc_out: dict[str, Any], lep_out: dict[str, Any], show: int
) -> tuple[int, list[str], dict[str, int], str | None]:
    d = normalize(dvc_out, "dvc")
    lp = normalize(lep_out, "lepton-ci")
    problems = []
    for key in sorted(d.keys() - lp.keys()):
        problems.append(f"only in dvc:       {key[0]} {key[1]} {d[key]}")
    for key in sorted(lp.keys() - d.keys()):
        problems.append(f"only in lepton-ci: {key[0]} {key[1]} {lp[key]}")
    exact = 0
    for key in sorted(d.keys() & lp.keys()):
        for field in ("old", "new", "diff"):
            a, b = d[key][field], lp[key][field]
            if not same(a, b):
                problems.append(f"{field} differs:   {key[0]} {key[1]}: dvc={a!r} lepton-ci={b!r}")
            elif a == b and type(a) is type(b):
                exact += 1
    stats = {"dvc": len(d), "lepton-ci": len(lp), "common": len(d.keys() & lp.keys()), "exact_fields": exact}
    return len(problems), problems[:show], stats, (rounding_hint(d, lp) if problems else None)


def rounding_hint(d: dict, lp: dict) -> str | None:
    """If every differing value equals DVC's value rounded to some digits, say so (diagnosis only)."""
    for field in ("diff", "old", "new"):
        pairs = [
            (d[k][field], lp[k][field])
            for k in d.keys() & lp.keys()
            if isinstance(d[k][field], float) and isinstance(lp[k][field], (int, float)) and not same(d[k][field], lp[k][field])
        ]
        if not pairs:
            continue
        for digits in range(0, 13):
            if all(round(a, digits) == b for a, b in pairs):
                return (
                    f"note: all {len(pairs)} differing '{field}' values equal DVC's value rounded to {digits} "
                    f"decimals: lepton-ci rounds '{field}' in --json, DVC emits the unrounded value"
                )
    return None


# --------------------------------------------------------------------------- main


def run_json(cmd: list[str], cwd: Path, tool: str) -> dict[str, Any]:
    proc = _bench.run_capture(cmd, cwd=cwd)
    if proc.returncode != 0:
        raise _bench.SetupError(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stderr.strip()[-2000:]}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise _bench.SetupError(f"{tool}: output is not JSON ({exc}): {proc.stdout[:300]!r}") from exc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench.add_common_arguments(ap, runs=5)
    ap.add_argument("--files", type=int, default=50, help="metrics files (default 50)")
    ap.add_argument("--keys", type=int, default=200, help="numeric metrics per file (default 200)")
    ap.add_argument("--seed", type=int, default=1234, help="random seed for the generated data")
    ap.add_argument("--min-speedup", type=float, default=10.0, help="target dvc/lepton-ci ratio (default 10)")
    ap.add_argument("--dir", metavar="PATH", help="build the repo here (must not exist) instead of a temp dir")
    ap.add_argument("--keep", action="store_true", help="keep the generated repo and print its path")
    ap.add_argument("--dvc-only", action="store_true", help="generate + time dvc only (no lepton-ci, no verification)")
    ap.add_argument("--show", type=int, default=20, help="mismatches to print (default 20)")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.files < 1 or args.keys < 4:
        ap.error("--runs >= 1, --files >= 1, --keys >= 4")

    try:
        dvc = _bench.find_dvc(args.dvc)
        lepton = None if args.dvc_only else _bench.find_lepton(args.lepton)
    except _bench.SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if args.dir:
        root = Path(args.dir).absolute()
        if root.exists():
            print(f"error: --dir {root} already exists", file=sys.stderr)
            return 2
        cleanup = None
    else:
        tmp = Path(tempfile.mkdtemp(prefix="lepton-bench-metrics-"))
        root = tmp / "repo"
        cleanup = None if args.keep else tmp

    try:
        return _run(args, root, dvc, lepton)
    except _bench.SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        elif args.keep or args.dir:
            print(f"repo kept at {root}")


def _run(args: argparse.Namespace, root: Path, dvc: Path, lepton: Path | None) -> int:
    counts = build_repo(root, dvc, args.files, args.keys, args.seed)
    if lepton is not None:
        print(f"lepton-ci: {lepton}  ({_bench.tool_version([str(lepton), '--version'])})")
    print(f"dvc:       {dvc}  ({_bench.tool_version([str(dvc), '--version'])})")
    print(f"host:      {_bench.host_line()}")
    print(
        f"repo:      {counts['files']} files x {args.keys} metrics; workspace: {counts['files_changed']} files "
        f"changed, {counts['values_changed']} values changed, {counts['added']} added, {counts['removed']} removed"
    )
    print(f"runs:      {args.runs} per command, interleaved, after {args.warmup} warm-up round(s)\n")

    dvc_cmd = [str(dvc), "metrics", "diff", "HEAD", "--json"]
    commands = {"dvc metrics diff HEAD --json": dvc_cmd}
    verdict_ok = True

    dvc_out = run_json(dvc_cmd, root, "dvc")
    if lepton is not None:
        lep_cmd = [str(lepton), "metrics", "diff", "HEAD", "--json"]
        commands = {"lepton-ci metrics diff HEAD --json": lep_cmd, **commands}
        lep_out = run_json(lep_cmd, root, "lepton-ci")
        n_bad, shown, st, hint = compare(dvc_out, lep_out, args.show)
        print(
            f"verify:    dvc {st['dvc']} changed metrics, lepton-ci {st['lepton-ci']}, common {st['common']}; "
            f"{st['exact_fields']} of {3 * st['common']} old/new/diff fields identical in value and type"
        )
        if lep_out.get("notes"):
            notes = lep_out["notes"]
            print(f"           lepton-ci notes ({len(notes)}): " + "; ".join(map(str, notes[:3])) + (" ..." if len(notes) > 3 else ""))
        if n_bad:
            verdict_ok = False
            print(f"verify:    FAIL, {n_bad} mismatch(es):")
            if hint:
                print(f"  {hint}")
            for line in shown:
                print(f"  {line}")
            if n_bad > len(shown):
                print(f"  ... {n_bad - len(shown)} more")
        else:
            print("verify:    PASS, same metrics and same old/new/diff numbers")
        print()
    else:
        print(f"dvc reports {sum(len(v) for v in dvc_out.values())} changed metrics in {len(dvc_out)} files\n")

    samples = _bench.time_interleaved(commands, runs=args.runs, cwd=root, warmup=args.warmup)
    stats = {name: _bench.summarize(xs) for name, xs in samples.items()}
    dvc_med = stats["dvc metrics diff HEAD --json"]["median"]
    rows = [
        [name, f"{st['median']:.3f}", f"{st['min']:.3f}", f"{st['max']:.3f}", f"{dvc_med / st['median']:.1f}x"]
        for name, st in stats.items()
    ]
    _bench.print_table(["command", "median s", "min s", "max s", "speedup vs dvc"], rows)
    print()

    if lepton is None:
        return 0
    speedup = dvc_med / stats["lepton-ci metrics diff HEAD --json"]["median"]
    checks = [
        (f"lepton-ci >= {args.min_speedup:g}x faster than dvc", f"{speedup:.1f}x", speedup >= args.min_speedup),
        ("same metrics and numbers as dvc", "match" if verdict_ok else "mismatch", verdict_ok),
    ]
    _bench.print_table(["target", "observed", "result"], [[t, o, "PASS" if ok else "FAIL"] for t, o, ok in checks])
    print()
    if all(ok for _, _, ok in checks):
        print("PASS: all targets met")
        return 0
    print("FAIL: " + ", ".join(t for t, _, ok in checks if not ok))
    return 1


if __name__ == "__main__":
    sys.exit(main())
