"""lepton_ci.tracking: what training scripts call. Flat and nested metrics, bad values named, and no
update lost when several processes (torchrun ranks) log into one run at once."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lepton_ci import tracking

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "run"
    monkeypatch.setenv(tracking.RUN_DIR_ENV, str(d))
    return d


def _logged(d: Path, name: str = tracking.METRICS_FILE) -> dict:
    return json.loads((d / name).read_text())


def test_flat_nested_and_mixed_metrics(run_dir: Path) -> None:
    tracking.log_metrics({"eval.accuracy": 0.93})  # raised ValueError before
    tracking.log_metrics({"eval": {"loss": 0.2, "per_class": {"a": 1}}, "train.loss": 0.1, "epochs": 3})
    assert _logged(run_dir) == {"eval.accuracy": 0.93, "eval.loss": 0.2, "eval.per_class.a": 1, "train.loss": 0.1, "epochs": 3}


@pytest.mark.parametrize("metrics, named", [
    ({"ok": 1, "flag": True}, "'flag'"),
    ({"eval": {"name": "resnet"}}, "'eval.name'"),
    ({"eval.acc": None}, "'eval.acc'"),
    ({"loss": math.nan}, "'loss'"),
    ({"eval": {"loss": -math.inf}}, "'eval.loss'"),
    ({"big": 10 ** 400}, "'big'"),
    ({"eval": {}}, "'eval'"),
    ({"a.b": 1, "a": {"b": 2}}, "'a.b'"),
    ({"eval": [0.5]}, "'eval'"),
])
def test_bad_metric_values_are_refused_naming_the_key(run_dir: Path, metrics: dict, named: str) -> None:
    with pytest.raises(ValueError) as info:
        tracking.log_metrics(metrics)
    assert named in str(info.value)
    assert not (run_dir / tracking.METRICS_FILE).exists()  # nothing half-logged


def test_empty_dict_is_refused(run_dir: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        tracking.log_metrics({})
    with pytest.raises(ValueError, match="empty"):
        tracking.log_params({})


def test_params_nested_and_flat_and_bad_values(run_dir: Path) -> None:
    tracking.log_params({"optimizer": {"name": "adam", "lr": 0.001}, "model.depth": 3, "shuffle": True, "seed": None})
    assert _logged(run_dir, tracking.PARAMS_FILE) == {
        "optimizer": {"name": "adam", "lr": 0.001}, "model.depth": 3, "shuffle": True, "seed": None,
    }
    with pytest.raises(ValueError, match="'optimizer.lr'"):
        tracking.log_params({"optimizer": {"lr": math.nan}})
    with pytest.raises(ValueError, match="'opt'"):
        tracking.log_params({"opt": object()})


def test_history_line_per_step(run_dir: Path) -> None:
    tracking.log_metrics({"loss": 0.5}, step=1)
    tracking.log_metrics({"loss": 0.4}, step=2)
    lines = [json.loads(line) for line in (run_dir / tracking.HISTORY_FILE).read_text().splitlines()]
    assert [(x["step"], x["metrics"]) for x in lines] == [(1, {"loss": 0.5}), (2, {"loss": 0.4})]
    assert _logged(run_dir) == {"loss": 0.4}


WORKER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import lepton_ci
    rank, calls = int(sys.argv[1]), int(sys.argv[2])
    for i in range(calls):
        metrics = {{"rank%d" % rank: {{"step": i}}, "shared.last": i}}
        if i % 100 == 0:
            metrics["rank%d.k%d" % (rank, i)] = rank  # new distinct keys along the way
        lepton_ci.log_metrics(metrics, step=i)
""")


@pytest.mark.slow
def test_eight_processes_lose_no_update(run_dir: Path, tmp_path: Path) -> None:
    ranks, calls = 8, 1000
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=str(ROOT)))
    env = {tracking.RUN_DIR_ENV: str(run_dir), "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, str(script), str(r), str(calls)], env=env) for r in range(ranks)]
    assert [p.wait(timeout=300) for p in procs] == [0] * ranks
    logged = _logged(run_dir)
    expected = {"shared.last": calls - 1}
    for r in range(ranks):
        expected[f"rank{r}.step"] = calls - 1  # each rank's last write survives: no lost update
        expected.update({f"rank{r}.k{i}": r for i in range(0, calls, 100)})
    assert logged == expected
    history = [json.loads(line) for line in (run_dir / tracking.HISTORY_FILE).read_text().splitlines()]
    assert len(history) == ranks * calls  # every append whole, none interleaved
    per_rank: dict[int, list[int]] = {}
    for entry in history:
        rank = next(int(k[4:].split(".")[0]) for k in entry["metrics"] if k.startswith("rank"))
        per_rank.setdefault(rank, []).append(entry["step"])
    assert per_rank == {r: list(range(calls)) for r in range(ranks)}
