#!/usr/bin/env python3
"""`lepton-ci build`: the model-only rebuild (no Docker Engine) vs a full `docker build` of the same image,
the bytes the rebuild pushes vs the model's size, and the serving image's size vs MLflow's.

Set-up (untimed): a `docker-registry` on loopback, a scikit-learn project (a random forest on sklearn's
wine data, about 1.5 MB of model) trained, gated and tagged, and one full build that pushes the serving
base image. Then each round registers a new version (untimed) and times, interleaved (the order
alternates each round):
- `model-only`: `lepton-ci build --on-top-of <base>`: the model layer appended in the registry, pushed;
- `full docker build`: `lepton-ci build --no-push` with the same inputs, i.e. the engine building the
  same Dockerfile on a warm layer cache (its best case: only the model stage runs), not pushed.
Sizes: the serving image's uncompressed size in the engine vs what `mlflow models build-docker` builds
for the same model. MLflow's build cannot run here (it pulls its base image and pip-installs MLflow inside
the build, and this machine reaches neither Docker Hub nor, from a build, PyPI), so its size is the one
its own generated Dockerfile (`mlflow models generate-dockerfile`) implies: the same base image as ours,
plus the environment its Dockerfile installs (MLflow and the model's requirements), measured by
installing exactly that into a fresh virtual environment on this machine (`--mlflow-python`, default
benchmarks/.venv-mlflow, created with `pip install mlflow scikit-learn` if missing).

Needs DOCKER_HOST with the base image (scripts/deps/40-docker.sh), docker-registry, the repo's .venv.
Exit: 0 all targets met, 1 a target missed, 2 set-up error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench import REPO_ROOT, SetupError, free_port, host_line, print_table

_WINE = (REPO_ROOT / "tests" / "support" / "wine_project.py").read_text()
TRAIN = _WINE.split('TRAIN = """\\\n', 1)[1].split('"""', 1)[0]
BASE_IMAGE = "lepton-test/python:3.11"


def sh(*cmd: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 1800) -> str:
    proc = subprocess.run(list(cmd), cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise SetupError(f"`{' '.join(cmd)}` exited {proc.returncode}: {(proc.stdout + proc.stderr)[-1500:]}")
    return proc.stdout


def start_registry(d: Path) -> tuple[subprocess.Popen, str]:
    exe = os.environ.get("LEPTON_DOCKER_REGISTRY") or shutil.which("docker-registry")
    if not exe:
        raise SetupError("docker-registry is missing (apt-get install docker-registry)")
    port = free_port()
    cfg = d / "registry.yml"
    cfg.write_text(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n"
                   f"    rootdirectory: {d / 'storage'}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([exe, "serve", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, f"127.0.0.1:{port}"


def config(image: str, push: bool) -> str:
    return f"""version: 1
model: {{name: wine, framework: sklearn, file: model.joblib}}
train:
  command: {sys.executable} train.py
  params: {{n_estimators: 800}}
  metrics: [metrics.json]
  artifacts: [model.joblib]
gate:
  rules: [{{metric: eval.accuracy, min: 0.8}}]
registry: file://.lepton/registry
signing: {{public_key: keys/lepton-signing.pub}}
build: {{image: {image}, base_image: {BASE_IMAGE}, push: {str(push).lower()}}}
"""


def mlflow_implied_bytes(python: Path, model_dir: Path, work: Path) -> tuple[int, str]:
    """Bytes of what MLflow's generated Dockerfile installs on top of its base, measured here."""
    if not python.exists():
        venv = python.parent.parent
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        sh(str(venv / "bin" / "pip"), "install", "-q", "mlflow", "scikit-learn", timeout=1800)
    version = sh(str(python), "-c", "import mlflow; print(mlflow.__version__)").strip()
    save = (
        "import joblib, mlflow.sklearn, sys; "
        "mlflow.sklearn.save_model(joblib.load(sys.argv[1]), sys.argv[2], serialization_format='cloudpickle')"
    )
    sh(str(python), "-c", save, str(model_dir / "model.joblib"), str(work / "mlflow-model"))
    sh(str(python), "-m", "mlflow", "models", "generate-dockerfile", "-m", str(work / "mlflow-model"),
       "-d", str(work / "mlflow-docker"), "--env-manager", "local")
    dockerfile = (work / "mlflow-docker" / "Dockerfile").read_text()
    base = next((line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM ")), "?")
    venv = python.parent.parent
    site = sh(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    size = int(sh("du", "-sb", site).split()[0])
    return size, f"MLflow {version}, Dockerfile FROM {base}; its install measured in {venv.name}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=3, help="timed rounds (default 3)")
    ap.add_argument("--python", default=str(REPO_ROOT / ".venv" / "bin" / "python"), help="lepton-ci's Python")
    ap.add_argument("--mlflow-python", default=str(REPO_ROOT / "benchmarks" / ".venv-mlflow" / "bin" / "python"))
    ap.add_argument("--min-speedup", type=float, default=10.0)
    ap.add_argument("--max-size-ratio", type=float, default=0.5)
    args = ap.parse_args()
    if not os.environ.get("DOCKER_HOST"):
        raise SetupError("DOCKER_HOST is not set (scripts/deps/40-docker.sh starts an engine)")
    lepton = [args.python, "-m", "lepton_ci.cli"]
    work = Path(tempfile.mkdtemp(prefix="lepton-bench-build-"))
    registry, host = start_registry(work)
    try:
        proj = work / "wine"
        proj.mkdir()
        (proj / "train.py").write_text(TRAIN)
        image = f"{host}/bench/wine-serve"
        (proj / "lepton.yml").write_text(config(image, True))
        (proj / "local.yml").write_text(config(image, False))
        sh(*lepton, "keys", "generate", "--dir", "keys", cwd=proj)
        key = (proj / "keys" / "lepton-signing.key").read_text()
        env = {"LEPTON_CI_SIGNING_KEY": key, "LEPTON_CI_PROGRESS": "0"}

        def new_version(n: int) -> None:
            for step in (["train", "--param", f"n_estimators={n}"], ["gate"], ["tag"]):
                sh(*lepton, *step, cwd=proj, env=env)

        new_version(800)
        mlflow_extra, mlflow_note = mlflow_implied_bytes(Path(args.mlflow_python), proj, work)
        sh(*lepton, "build", "--progress", "quiet", cwd=proj, env=env)  # pushes the serving base
        full = json.loads((proj / ".lepton" / "image.json").read_text())
        base = f"{image}:{full['base'].rsplit(':', 1)[1]}"
        times: dict[str, list[float]] = {"model-only": [], "full docker build": []}
        ratios: list[float] = []
        for i in range(args.runs):
            new_version(801 + i)
            model = (proj / "model.joblib").stat().st_size
            order = ["model-only", "full docker build"]
            for name in order if i % 2 == 0 else order[::-1]:
                flags = ["--on-top-of", base] if name == "model-only" else ["--no-push"]
                config_flag = [] if name == "model-only" else ["-c", "local.yml"]
                cmd = [*lepton, *config_flag, "build", "--progress", "quiet", "--output", f"{name[:4]}.json", *flags]
                t0 = time.perf_counter()
                sh(*cmd, cwd=proj, env=env)
                times[name].append(time.perf_counter() - t0)
            rebuilt = json.loads((proj / "mode.json").read_text())
            ratios.append(rebuilt["pushed_bytes"] / model)
        ours = json.loads(sh("docker", "image", "inspect", full["image"]))[0]["Size"]
        base_size = json.loads(sh("docker", "image", "inspect", BASE_IMAGE))[0]["Size"]
        mlflow_size = base_size + mlflow_extra
    finally:
        images = subprocess.run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True,
                                text=True).stdout.split()
        mine = [ref for ref in images if ref.startswith(f"{host}/")]
        if mine:  # with the vfs storage driver every layer is a full copy: do not leave them behind
            subprocess.run(["docker", "image", "rm", "--force", *mine], capture_output=True)
        registry.terminate()
        registry.wait()
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    speedup = med["full docker build"] / med["model-only"]
    worst = max(ratios)
    size_ratio = ours / mlflow_size
    print(f"# lepton-ci build: model-only vs full docker build ({host_line()}; {args.runs} rounds, medians)")
    rows = [[k, f"{med[k]:.2f}", f"{min(v):.2f}", f"{max(v):.2f}"] for k, v in times.items()]
    print_table(["build", "median s", "min s", "max s"], rows)
    print()
    print_table(["figure", "value", "target", "met"], [
        ["speed-up (full / model-only)", f"{speedup:.1f}x", f">= {args.min_speedup:g}x",
         "yes" if speedup >= args.min_speedup else "NO"],
        ["pushed bytes / model bytes (worst round)", f"{worst:.4f}", "<= 1.01", "yes" if worst <= 1.01 else "NO"],
        ["serving image (uncompressed)", f"{ours / 1e6:.0f} MB", "", ""],
        ["MLflow image implied (same base)", f"{mlflow_size / 1e6:.0f} MB", "", ""],
        ["size ratio (ours / MLflow)", f"{size_ratio:.2f}", f"<= {args.max_size_ratio:g}",
         "yes" if size_ratio <= args.max_size_ratio else "NO"],
    ])
    print(f"\nMLflow: {mlflow_note}; base {BASE_IMAGE} {base_size / 1e6:.0f} MB + install {mlflow_extra / 1e6:.0f} MB "
          "(not built: no network inside builds here; no Java, which MLflow adds only for Spark models)")
    ok = speedup >= args.min_speedup and worst <= 1.01 and size_ratio <= args.max_size_ratio
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SetupError as exc:
        print(f"build_vs_docker: {exc}", file=sys.stderr)
        sys.exit(2)
