#!/usr/bin/env python3
"""lepton-ci's model server side by side with MLServer 1.7.1, under wrk load, interleaved in one run.

    python3 benchmarks/serve_vs_mlserver.py [--rounds 3] [--duration 10] [--connections 32]

Trains LogisticRegression and RandomForestClassifier(n_estimators=50) on sklearn's digits (64 features) in
lepton-ci's Python (`--lepton-python`, default the repository's .venv), saves them with joblib, and serves each
with `python -m lepton_ci.serve` (default settings plus `--lepton-args`) and with one MLServer (`mlserver start`,
from benchmarks/.venv-mlserver, created on first use) holding every model twice: unbatched, and with adaptive
batching (`--max-batch-size`, `--max-batch-time`). wrk (`-t1 -c32 --latency`) POSTs one 64-float row per
request as a V2 JSON body. After an untimed warm-up sample per (model, server), every round runs each
(model, server) once, the order alternating each round, and in-process `predict` on 32-row batches is timed in
the same Python as the floor; medians are reported.

Targets, for both models: lepton-ci requests/s ≥ 2 × MLServer batched, lepton-ci p99 ≤ MLServer batched p99;
RandomForest: lepton-ci rows/s ≥ 0.5 × in-process batch-32 rows/s; no sample with non-2xx responses or socket
errors. Exit status: 0 all met, 1 a target missed, 2 setup error.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from _bench import (
    BENCH_DIR,
    REPO_ROOT,
    SetupError,
    bench_env,
    free_port,
    host_line,
    print_table,
    stop_process_group,
)

MLSERVER_VENV = BENCH_DIR / ".venv-mlserver"
# uvloop 0.21.0 is required: newer releases make MLServer's parallel workers crash-loop.
MLSERVER_PINS = {"mlserver": "1.7.1", "mlserver-sklearn": "1.7.1", "uvloop": "0.21.0"}
MLSERVER_DEFAULT_PORTS = (8080, 8081, 8082)
INPUT_NAME = "input-0"  # lepton-ci's sklearn input name; MLServer's sklearn runtime takes any name
MODELS = {"lr": "LogisticRegression", "rf": "RandomForest(50)"}
SERVERS = {"lepton": "lepton-ci", "mlserver": "MLServer", "mlserver-batched": "MLServer batched"}
FLOOR_BATCH = 32
START_TIMEOUT_S = 180.0

WRK_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {{"requests": %.0f, "duration_us": %.0f, "p50_us": %.1f, "p99_us": %.1f, "max_us": %.1f, '
    .. '"connect": %.0f, "read": %.0f, "write": %.0f, "status": %.0f, "timeout": %.0f}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


# --- helpers run in lepton-ci's Python (sklearn, joblib and lepton_ci are there) ---------------------------------


def helper_train(work: Path, lr_max_iter: int) -> None:
    """Train and save both models; print the request row and each model's prediction for it as JSON."""
    import warnings

    import sklearn
    from lepton_ci.frameworks.sklearn import save
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    warnings.filterwarnings("ignore")  # LogisticRegression on unscaled pixels may not converge: fine here
    x, y = load_digits(return_X_y=True)
    models = {
        "lr": LogisticRegression(max_iter=lr_max_iter),
        "rf": RandomForestClassifier(n_estimators=50, random_state=0),
    }
    row = x[:1]
    expected = {}
    for key, model in models.items():
        model.fit(x, y)
        save(model, work / f"{key}.joblib")
        expected[key] = model.predict(row).tolist()
    print(json.dumps({"row": row[0].tolist(), "expected": expected, "sklearn": sklearn.__version__}))


def helper_floor(work: Path, repeats: int) -> None:
    """Rows/s of in-process `predict` on 32-row batches, one sample per call, for each saved model (JSON)."""
    import joblib
    from sklearn.datasets import load_digits

    x, _ = load_digits(return_X_y=True)
    batch = x[:FLOOR_BATCH].copy()
    result = {}
    for key in MODELS:
        model = joblib.load(work / f"{key}.joblib")
        for _ in range(3):
            model.predict(batch)
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.predict(batch)
            samples.append(FLOOR_BATCH / (time.perf_counter() - t0))
        result[key] = samples
    print(json.dumps(result))


# --- set-up --------------------------------------------------------------------------------------------------------


def mlserver_versions(python: Path) -> dict[str, str | None]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "def v(n):\n"
        "    try: return m.version(n)\n"
        "    except m.PackageNotFoundError: return None\n"
        "print(json.dumps({n: v(n) for n in sys.argv[1:]}))"
    )
    proc = subprocess.run([str(python), "-c", code, *MLSERVER_PINS], capture_output=True, text=True, check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def find_mlserver(explicit: str | None) -> Path:
    """`mlserver`: --mlserver PATH, else benchmarks/.venv-mlserver (created, or repaired to the pins, with pip)."""
    if explicit:
        exe = Path(explicit).expanduser()
        if not exe.exists():
            raise SetupError(f"--mlserver {explicit}: no such file")
        return exe.absolute()
    python, exe = MLSERVER_VENV / "bin" / "python", MLSERVER_VENV / "bin" / "mlserver"
    if exe.exists() and python.exists() and mlserver_versions(python) == MLSERVER_PINS:
        return exe
    pins = [f"{name}=={version}" for name, version in MLSERVER_PINS.items()]
    print(f"[setup] installing {' '.join(pins)} into {MLSERVER_VENV} (a minute or two) ...", file=sys.stderr)
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run(pip + pins, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SetupError(f"could not install MLServer into {MLSERVER_VENV}: {exc}") from exc
    if not exe.exists():
        raise SetupError(f"pip install mlserver did not create {exe}")
    return exe


def run_helper(python: Path, args: list[str], cwd: Path) -> Any:
    """Run one of this file's helpers in another Python; its last stdout line is JSON."""
    cmd = [str(python), str(Path(__file__).resolve()), "--helper", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=bench_env(), cwd=cwd, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise SetupError(f"`{shlex.join(cmd)}` exited {proc.returncode}:\n{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_mlserver_repository(root: Path, work: Path, args: argparse.Namespace) -> dict[str, int]:
    """settings.json (loopback, free ports away from 8080-8082) and one model-settings.json per served model."""
    ports: dict[str, int] = {}
    for key in ("http_port", "grpc_port", "metrics_port"):
        ports[key] = free_port(avoid=[*MLSERVER_DEFAULT_PORTS, *ports.values()])
    settings = {"host": "127.0.0.1", **ports, "parallel_workers": args.parallel_workers, "debug": args.mlserver_debug}
    root.mkdir()
    (root / "settings.json").write_text(json.dumps(settings, indent=2))
    for key in MODELS:
        for name, batching in ((key, {}), (f"{key}-batched", {"max_batch_size": args.max_batch_size})):
            if batching:
                batching["max_batch_time"] = args.max_batch_time
            model_settings = {
                "name": name,
                "implementation": "mlserver_sklearn.SKLearnModel",
                **batching,
                "parameters": {"uri": str(work / f"{key}.joblib")},
            }
            (root / name).mkdir()
            (root / name / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    return ports


# --- servers -------------------------------------------------------------------------------------------------------


class Server:
    """A server process in a session of its own (so its whole process group can be stopped), output to a log."""

    def __init__(self, label: str, cmd: list[str], log: Path, cwd: Path, port_file: Path | None = None) -> None:
        self.label, self.cmd, self.log_path, self.port_file = label, cmd, log, port_file
        self.port = 0
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=cwd, env=bench_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace").strip()[-chars:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise SetupError(
                f"{self.label} exited with status {self.proc.returncode} ({shlex.join(self.cmd)}):\n{self.log_tail()}"
            )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, paths: list[str], deadline: float) -> None:
        for path in paths:
            while http_status(self.url(path)) != 200:
                self.check_alive()
                if time.monotonic() > deadline:
                    raise SetupError(f"{self.label}: GET {path} not 200 after {START_TIMEOUT_S:g}s:\n{self.log_tail()}")
                time.sleep(0.1)


def http_status(url: str, body: bytes | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return 0


def start_lepton(python: Path, key: str, work: Path, extra: list[str]) -> Server:
    port_file = work / f"lepton-{key}.port"
    cmd = [
        str(python), "-m", "lepton_ci.serve", "--model-dir", str(work), "--model-file", f"{key}.joblib",
        "--framework", "sklearn", "--name", key, "--version", "1", "--host", "127.0.0.1", "--port", "0",
        "--port-file", str(port_file), *extra,
    ]  # fmt: skip
    # cwd: the temp dir, so that `-m` (which puts the cwd first on sys.path) imports lepton-ci from --lepton-python's
    # installation, not from whatever directory this script was started in.
    return Server(f"lepton-ci ({key})", cmd, work / f"lepton-{key}.log", work, port_file)


def wait_lepton(server: Server, deadline: float) -> None:
    """The port file appears once the model is loaded and the socket listens; then /v2/health/ready."""
    port_file = server.port_file
    assert port_file is not None
    while not port_file.exists():
        server.check_alive()
        if time.monotonic() > deadline:
            raise SetupError(f"{server.label}: no port file after {START_TIMEOUT_S:g}s:\n{server.log_tail()}")
        time.sleep(0.05)
    server.port = int(port_file.read_text().strip())
    server.wait_ready(["/v2/health/ready"], deadline)


def check_prediction(server: Server, model: str, body: bytes, expected: list[Any]) -> None:
    """One request before any load: the server answers 200 with the model's own prediction for the row."""
    url = server.url(f"/v2/models/{model}/infer")
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise SetupError(f"{server.label}: POST {url}: {exc.code} {exc.read()[:500]!r}") from exc
    except (OSError, ValueError) as exc:
        raise SetupError(f"{server.label}: POST {url}: {exc}") from exc
    got = [o.get("data") for o in answer.get("outputs", []) if o.get("name") == "predict"]
    if not got or got[0] != expected:
        raise SetupError(f"{server.label}: {model} predicted {got or answer}, in-process predict gave {expected}")


# --- load ----------------------------------------------------------------------------------------------------------


def run_wrk(wrk: str, lua: Path, url: str, args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    cmd = [
        wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds:g}s", "--timeout", f"{args.wrk_timeout:g}s",
        "--latency", "-s", str(lua), url,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        raise SetupError(f"`{shlex.join(cmd)}` exited {proc.returncode}:\n{(proc.stderr or proc.stdout)[-2000:]}")
    raw = json.loads(lines[-1][len("BENCH ") :])
    seconds_run = raw["duration_us"] / 1e6
    socket_errors = {k: int(raw[k]) for k in ("connect", "read", "write", "timeout")}
    return {
        "requests": int(raw["requests"]),
        "seconds": seconds_run,
        "requests_per_s": raw["requests"] / seconds_run if seconds_run else 0.0,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "non_2xx": int(raw["status"]),
        "socket_errors": socket_errors,
        "failed": bool(raw["status"] or sum(socket_errors.values())),
    }


def sample_line(sample: dict[str, Any]) -> str:
    text = (
        f"{MODELS[sample['model']]:<18} {SERVERS[sample['server']]:<17} {sample['requests_per_s']:>8,.0f} req/s  "
        f"p50 {sample['p50_ms']:7.1f} ms  p99 {sample['p99_ms']:7.1f} ms"
    )
    if sample["failed"]:
        errors = ", ".join(f"{k} {v}" for k, v in sample["socket_errors"].items() if v)
        text += f"  MISS: {sample['non_2xx']} non-2xx responses" + (f"; socket errors: {errors}" if errors else "")
    return text


# --- main ----------------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    ap.add_argument("-d", "--duration", type=float, default=10.0, help="seconds of load per sample (default 10)")
    ap.add_argument("-c", "--connections", type=int, default=32, help="wrk connections (default 32)")
    ap.add_argument("-t", "--threads", type=int, default=1, help="wrk threads (default 1)")
    ap.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of the untimed warm-up sample per server (default 3)"
    )
    ap.add_argument("--wrk-timeout", type=float, default=2.0, help="wrk's per-request timeout in s (default 2)")
    ap.add_argument(
        "--lepton-python",
        type=Path,
        default=REPO_ROOT / ".venv" / "bin" / "python",
        help="Python with lepton-ci, scikit-learn and joblib (default: the repository's .venv)",
    )
    ap.add_argument(
        "--lepton-args", default="", help='extra arguments for `python -m lepton_ci.serve`, e.g. "--workers 2"'
    )
    ap.add_argument("--mlserver", metavar="PATH", help="mlserver executable (default: benchmarks/.venv-mlserver)")
    ap.add_argument(
        "--parallel-workers",
        type=int,
        default=os.cpu_count() or 1,
        help=f"MLServer parallel_workers (default: CPU count, {os.cpu_count()})",
    )
    ap.add_argument("--max-batch-size", type=int, default=32, help="MLServer batched: max_batch_size (default 32)")
    ap.add_argument(
        "--max-batch-time", type=float, default=0.005, help="MLServer batched: max_batch_time in s (default 0.005)"
    )
    ap.add_argument(
        "--mlserver-debug",
        action="store_true",
        help="keep MLServer's debug mode (its default: DEBUG logs and an access-log line per request); "
        "off by default, as one would deploy it",
    )
    ap.add_argument("--lr-max-iter", type=int, default=5000, help="LogisticRegression max_iter (default 5000)")
    ap.add_argument(
        "--floor-repeats", type=int, default=50, help="timed in-process predict calls per model and round (default 50)"
    )
    ap.add_argument("--min-ratio", type=float, default=2.0, help="lepton-ci / MLServer batched requests/s (default 2)")
    ap.add_argument(
        "--min-floor-ratio", type=float, default=0.5, help="RandomForest lepton-ci rows/s / in-process (default 0.5)"
    )
    ap.add_argument("--json", type=Path, metavar="PATH", help="also write the raw samples here")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (models, settings, server logs)")
    args = ap.parse_args()
    if min(args.rounds, args.connections, args.threads, args.parallel_workers, args.max_batch_size) < 1:
        ap.error("--rounds, --connections, --threads, --parallel-workers and --max-batch-size must be at least 1")
    if args.duration <= 0 or args.warmup < 0:
        ap.error("--duration must be positive and --warmup not negative")
    return args


def benchmark(args: argparse.Namespace, wrk: str, work: Path, servers: list[Server]) -> int:
    lepton_python = args.lepton_python.expanduser().absolute()
    if not lepton_python.exists():
        raise SetupError(f"--lepton-python {lepton_python}: no such file")
    lepton_extra = shlex.split(args.lepton_args)
    mlserver = find_mlserver(args.mlserver)

    trained = run_helper(lepton_python, ["train", str(work), str(args.lr_max_iter)], work)
    body = json.dumps({"inputs": [{"name": INPUT_NAME, "shape": [1, 64], "datatype": "FP64", "data": trained["row"]}]})
    lua = work / "post-row.lua"
    lua.write_text(WRK_LUA.format(body=body))
    ports = write_mlserver_repository(work / "mlserver", work, args)

    # Start everything at once (MLServer takes several seconds), then wait for each in turn.
    deadline = time.monotonic() + START_TIMEOUT_S
    mls = Server("MLServer", [str(mlserver), "start", str(work / "mlserver")], work / "mlserver.log", work / "mlserver")
    mls.port = ports["http_port"]
    servers.append(mls)
    lepton = {key: start_lepton(lepton_python, key, work, lepton_extra) for key in MODELS}
    servers.extend(lepton.values())
    for server in lepton.values():
        wait_lepton(server, deadline)
    # MLServer's /v2/health/ready is all(model.ready) over the models registered so far (true for none, and the
    # HTTP server starts alongside the model loads), so wait for every model's own ready endpoint first.
    mls.wait_ready(
        [f"/v2/models/{m}{b}/ready" for m in MODELS for b in ("", "-batched")] + ["/v2/health/ready"], deadline
    )
    versions = {
        "lepton-ci": run_helper(lepton_python, ["version"], work)["lepton-ci"],
        "scikit-learn (lepton-ci)": trained["sklearn"],
        **{k: v or "?" for k, v in mlserver_versions(mlserver.parent / "python").items()},
    }

    targets: dict[tuple[str, str], tuple[Server, str]] = {}  # (model, server kind) -> (server, name it serves)
    for key in MODELS:
        targets[(key, "lepton")] = (lepton[key], key)
        targets[(key, "mlserver")] = (mls, key)
        targets[(key, "mlserver-batched")] = (mls, f"{key}-batched")
    for (key, _), (server, name) in targets.items():
        check_prediction(server, name, body.encode(), trained["expected"][key])

    print(f"# {host_line()}")
    print(f"# versions: {', '.join(f'{k} {v}' for k, v in versions.items())}")
    print(
        f"# wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s; {args.rounds} round(s); MLServer "
        f"parallel_workers {args.parallel_workers}, batched max_batch_size {args.max_batch_size} max_batch_time "
        f"{args.max_batch_time:g}s; lepton-ci args: {args.lepton_args or '(none)'}",
        flush=True,
    )
    samples: list[dict[str, Any]] = []
    floor: dict[str, list[float]] = {key: [] for key in MODELS}
    order = list(targets)
    if args.warmup > 0:
        for key, kind in order:
            server, name = targets[(key, kind)]
            sample = {"round": 0, "warmup": True, "model": key, "server": kind}
            sample.update(run_wrk(wrk, lua, server.url(f"/v2/models/{name}/infer"), args, args.warmup))
            server.check_alive()
            samples.append(sample)
            print(f"[warm-up] {sample_line(sample)}", file=sys.stderr)
    for rnd in range(1, args.rounds + 1):
        for key, values in run_helper(lepton_python, ["floor", str(work), str(args.floor_repeats)], work).items():
            floor[key].extend(values)
        for key, kind in order if rnd % 2 else reversed(order):
            server, name = targets[(key, kind)]
            sample = {"round": rnd, "warmup": False, "model": key, "server": kind}
            sample.update(run_wrk(wrk, lua, server.url(f"/v2/models/{name}/infer"), args, args.duration))
            server.check_alive()
            samples.append(sample)
            print(f"[round {rnd}/{args.rounds}] {sample_line(sample)}", file=sys.stderr)

    timed = [s for s in samples if not s["warmup"]]
    med: dict[tuple[str, str], dict[str, float]] = {}
    for key, kind in order:
        mine = [s for s in timed if s["model"] == key and s["server"] == kind]
        med[(key, kind)] = {
            f: statistics.median(s[f] for s in mine) for f in ("requests_per_s", "p50_ms", "p99_ms", "max_ms")
        }
        med[(key, kind)]["misses"] = sum(s["failed"] for s in mine)
        med[(key, kind)]["n"] = len(mine)
    floor_med = {key: statistics.median(values) for key, values in floor.items()}

    rows = []
    for key in MODELS:
        batched = med[(key, "mlserver-batched")]["requests_per_s"]
        for kind in SERVERS:
            m = med[(key, kind)]
            rows.append(
                [
                    MODELS[key],
                    SERVERS[kind],
                    f"{m['requests_per_s']:,.0f}",
                    f"{m['p50_ms']:.1f} ms",
                    f"{m['p99_ms']:.1f} ms",
                    f"{m['requests_per_s'] / batched:.2f}×" if batched else "-",
                    f"{m['misses']:.0f}/{m['n']:.0f}",
                ]
            )
        rows.append([MODELS[key], f"in-process predict, batch {FLOOR_BATCH} (floor)", f"{floor_med[key]:,.0f} rows/s"])
        rows[-1] += [""] * 4
    checks: list[tuple[str, str, bool]] = []
    for key in MODELS:
        mine, theirs = med[(key, "lepton")], med[(key, "mlserver-batched")]
        ratio = mine["requests_per_s"] / theirs["requests_per_s"] if theirs["requests_per_s"] else 0.0
        checks.append(
            (
                f"{MODELS[key]}: lepton-ci requests/s ≥ {args.min_ratio:g} × MLServer batched",
                f"{ratio:.2f}×",
                ratio >= args.min_ratio,
            )
        )
        checks.append(
            (
                f"{MODELS[key]}: lepton-ci p99 ≤ MLServer batched p99",
                f"{mine['p99_ms']:.1f} ms vs {theirs['p99_ms']:.1f} ms",
                mine["p99_ms"] <= theirs["p99_ms"],
            )
        )
    rf_ratio = med[("rf", "lepton")]["requests_per_s"] / floor_med["rf"]
    checks.append(
        (
            f"{MODELS['rf']}: lepton-ci rows/s ≥ {args.min_floor_ratio:g} × in-process batch-{FLOOR_BATCH} rows/s",
            f"{rf_ratio:.2f}×",
            rf_ratio >= args.min_floor_ratio,
        )
    )
    missed = sum(s["failed"] for s in timed)
    checks.append(("no sample with non-2xx responses or socket errors", f"{missed} of {len(timed)}", missed == 0))
    ok = all(met for _, _, met in checks)

    print()
    print_table(["model", "server", "requests/s", "p50", "p99", "vs MLServer batched", "samples with errors"], rows)
    print()
    print_table(["target", "measured", "met"], [[name, value, "yes" if met else "NO"] for name, value, met in checks])
    print()
    print("all targets met" if ok else "a target was missed")
    if args.json:
        report = {
            "host": host_line(),
            "versions": versions,
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "samples": samples,
            "floor_rows_per_s": floor,
            "medians": [{"model": k, "server": s, **v} for (k, s), v in med.items()],
            "floor_median_rows_per_s": floor_med,
            "targets": [{"target": name, "measured": value, "met": met} for name, value, met in checks],
            "ok": ok,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if ok else 1


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--helper":
        op, rest = sys.argv[2], sys.argv[3:]
        if op == "train":
            helper_train(Path(rest[0]), int(rest[1]))
        elif op == "floor":
            helper_floor(Path(rest[0]), int(rest[1]))
        elif op == "version":
            import lepton_ci

            print(json.dumps({"lepton-ci": lepton_ci.__version__}))
        else:
            raise SystemExit(f"unknown helper {op}")
        return 0
    args = parse_args()
    wrk = shutil.which("wrk")
    if not wrk:
        print("wrk is missing (apt-get install wrk)", file=sys.stderr)
        return 2

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)  # stop the servers on SIGTERM as on Ctrl-C
    work = Path(tempfile.mkdtemp(prefix="lepton-bench-serve-"))
    servers: list[Server] = []
    try:
        return benchmark(args, wrk, work, servers)
    except SetupError as exc:
        print(f"setup error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip stopping the servers
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with concurrent.futures.ThreadPoolExecutor(max(1, len(servers))) as pool:  # each may take its grace time
            list(pool.map(lambda server: stop_process_group(server.proc, grace=5.0), servers))
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
