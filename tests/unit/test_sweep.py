"""`lepton-ci sweep`: plans (every combination, a seeded sample, the CI's matrix limits, bad grids), and
collect (ranking, failed runs, files found beside run.json or in the GitLab job's tar, digests checked, the best
run installed where gate and tag look, the leaderboard and the parameter chart in the report).

The runs are made by the real `lepton-ci train` on a tiny pure-Python regression (y = 3x + 2 + noise, the
learning-rate grid of the sources), so the records are what the CI jobs would upload.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml
from lepton_ci.config import load_config
from lepton_ci.errors import UserError
from lepton_ci.records import RunRecord
from lepton_ci.steps import sweep
from lepton_ci.steps.train import train
from tests.e2e.helpers import assert_one_line_error, cli

TRAIN = """\
import json, os, random
lr = float(os.environ["LEPTON_PARAM_LR"])
epochs = int(os.environ.get("LEPTON_PARAM_EPOCHS", "30"))
rng = random.Random(0)
xs = [rng.random() for _ in range(200)]
ys = [3 * x + 2 + rng.gauss(0, 0.1) for x in xs]
w = b = 0.0
for _ in range(epochs):
    gw = sum((w * x + b - y) * x for x, y in zip(xs, ys)) * 2 / len(xs)
    gb = sum((w * x + b - y) for x, y in zip(xs, ys)) * 2 / len(xs)
    w, b = w - lr * gw, b - lr * gb
mse = sum((w * x + b - y) ** 2 for x, y in zip(xs, ys)) / len(xs)
json.dump({"eval": {"mse": mse}, "w": w, "b": b}, open("metrics.json", "w"))
open("model.json", "w").write(json.dumps({"w": w, "b": b, "lr": lr}))
"""

CONFIG = """\
model: {name: linear}
train:
  command: python3 train.py
  params: {lr: 0.1}
  metrics: [metrics.json]
  artifacts: [model.json]
gate:
  rules:
    - {metric: eval.mse, direction: lower, max: 1.0}
sweep:
  grid: {grid}
  objective: {metric: eval.mse, direction: lower}
"""


def project(root: Path, grid: str = "{lr: [0.01, 0.1, 1.9]}", extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.py").write_text(TRAIN)
    (root / "lepton.yml").write_text(CONFIG.replace("{grid}", grid) + extra)
    return root


def config_for(tmp_path: Path, grid: str, extra: str = "") -> object:
    return load_config(project(tmp_path, grid, extra) / "lepton.yml")


# ---- plan ------------------------------------------------------------------------------------------------


def test_plan_is_every_combination_in_grid_order(tmp_path: Path) -> None:
    config = config_for(tmp_path, "{lr: [0.01, 0.1, 1], opt: [sgd, adam], nesterov: [true]}")
    p = sweep.plan(config)
    assert p.grid_size == 6 and not p.sampled
    assert p.combinations[0] == {"lr": 0.01, "opt": "sgd", "nesterov": True}
    assert p.combinations[-1] == {"lr": 1, "opt": "adam", "nesterov": True}
    matrix = sweep.github_matrix(p)
    assert list(matrix) == ["include"] and len(matrix["include"]) == 6
    assert matrix["include"][1] == {
        "sweep_index": 1, "params": "lr=0.01 opt=adam nesterov=true", "lr": 0.01, "opt": "adam", "nesterov": True
    }


def test_param_words_read_back_as_the_same_values() -> None:
    from lepton_ci.steps.train import parse_param_overrides

    combo = {"lr": 0.001, "n": 3, "flag": False, "name": "resnet-50", "num_text": "1", "nul": "null", "e": 1e-05}
    words = sweep.param_words(combo).split()
    assert parse_param_overrides(words) == combo


def test_a_seeded_sample_is_stable_and_a_subset(tmp_path: Path) -> None:
    grid = "{a: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], b: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], c: [x, y]}"
    config = config_for(tmp_path, grid, "  sample: 12\n  seed: 7\n")
    first, again = sweep.plan(config), sweep.plan(config)
    assert first.sampled and first.grid_size == 200 and len(first.combinations) == 12
    assert first.combinations == again.combinations
    assert len({json.dumps(c) for c in first.combinations}) == 12
    other = load_config(project(tmp_path / "other", grid, "  sample: 12\n  seed: 8\n") / "lepton.yml")
    assert sweep.plan(other).combinations != first.combinations


def test_a_sample_of_a_huge_grid_costs_only_the_sample(tmp_path: Path) -> None:
    values = "[" + ", ".join(str(i) for i in range(100)) + "]"
    grid = "{" + ", ".join(f"p{i}: {values}" for i in range(6)) + "}"  # 10^12 combinations
    p = sweep.plan(config_for(tmp_path, grid, "  sample: 5\n"))
    assert p.grid_size == 10**12 and len(p.combinations) == 5


@pytest.mark.parametrize(
    "grid,extra,ci,needles",
    [
        ("{}", "", "github", ["sweep.grid is empty", "lepton.yml:"]),
        ("{lr: []}", "", "github", ["sweep.grid.lr has no values"]),
        ("{a: [" + ", ".join(map(str, range(20))) + "], b: [" + ", ".join(map(str, range(13))) + "]}", "", "github",
         ["260 combinations", "limit of 256 jobs", "sweep.sample"]),
        ("{a: [" + ", ".join(map(str, range(201))) + "]}", "", "gitlab", ["201 combinations", "limit of 200"]),
        ("{a: [1, 2, 3]}", "  max_jobs: 2\n", "github", ["3 combinations", "limit of 2", "max_jobs is 2"]),
        ("{a: ['two words']}", "", "github", ["sweep.grid.a[0]", "without spaces"]),
        ("{params: [1]}", "", "github", ["must be a plain name"]),
        ("{a: [1, 1]}", "", "github", ["lists a value twice"]),
    ],
)
def test_bad_grids_are_one_line_errors(tmp_path: Path, grid: str, extra: str, ci: str, needles: list[str]) -> None:
    project(tmp_path, grid, extra)
    r = cli("sweep", "plan", "--format", ci, cwd=tmp_path)
    assert_one_line_error(r, 2, *needles)


def test_no_sweep_section(tmp_path: Path) -> None:
    project(tmp_path)
    text = (tmp_path / "lepton.yml").read_text()
    (tmp_path / "lepton.yml").write_text(text[: text.index("sweep:")])
    assert_one_line_error(cli("sweep", "plan", cwd=tmp_path), 2, "no sweep: section")


def test_github_plan_on_stdout_and_as_output(tmp_path: Path) -> None:
    project(tmp_path)
    out = tmp_path / "gh-output"
    r = cli("sweep", "plan", cwd=tmp_path, env={"GITHUB_OUTPUT": str(out), "GITHUB_ACTIONS": "true"})
    assert r.code == 0, r
    matrix = json.loads(r.out)
    assert [e["lr"] for e in matrix["include"]] == [0.01, 0.1, 1.9]
    written = out.read_text()
    assert "jobs=3" in written and json.dumps(matrix, separators=(",", ":")) in written


def test_gitlab_child_pipeline(tmp_path: Path) -> None:
    project(tmp_path)
    r = cli("sweep", "plan", "--format", "gitlab", "--include", "{project: lepton/ci-templates, ref: 0.1.0, file: lepton.yml}",
            "--then", "gate", "--then", "tag", "-o", "child.yml", cwd=tmp_path)
    assert r.code == 0, r
    child = yaml.safe_load((tmp_path / "child.yml").read_text())
    assert child["include"] == [{"project": "lepton/ci-templates", "ref": "0.1.0", "file": "lepton.yml"}]
    assert child["stages"] == ["train", "gate", "tag"]
    train_job = child["lepton-sweep-train"]
    assert train_job["extends"] == ".lepton-setup"
    assert train_job["parallel"]["matrix"] == [{"LEPTON_CI_TRAIN_PARAMS": f"lr={v}"} for v in ("0.01", "0.1", "1.9")]
    assert "lepton-ci train --output" in train_job["script"][0]
    assert child["lepton-sweep-collect"]["needs"] == ["lepton-sweep-train"]
    assert child["lepton-gate"] == {
        "extends": ".lepton-gate", "stage": "gate", "needs": ["lepton-sweep-collect"], "rules": [{"when": "on_success"}]
    }
    assert child["lepton-tag"]["needs"] == ["lepton-sweep-collect", "lepton-gate"]
    # A child of a merge request pipeline gets no job without rules (GitLab's default `only:` is branches and
    # tags): every job has rules, and the workflow lets the pipeline be created.
    assert child["workflow"] == {"rules": [{"when": "always"}]}
    jobs = [k for k in child if k not in ("include", "stages", "workflow")]
    assert jobs and all(child[j]["rules"] == [{"when": "on_success"}] for j in jobs), jobs
    assert "tags" not in train_job and "image" not in train_job  # the runner's defaults unless asked


def test_gitlab_child_pipeline_sends_only_the_train_jobs_to_gpu_runners(tmp_path: Path) -> None:
    project(tmp_path)
    r = cli("sweep", "plan", "--format", "gitlab", "--then", "gate", "--train-tag", "gpu", "--train-tag", "cuda-12",
            "--train-image", "nvcr.io/nvidia/pytorch:24.08-py3", "-o", "child.yml", cwd=tmp_path)
    assert r.code == 0, r
    child = yaml.safe_load((tmp_path / "child.yml").read_text())
    assert child["lepton-sweep-train"]["tags"] == ["gpu", "cuda-12"]
    assert child["lepton-sweep-train"]["image"] == "nvcr.io/nvidia/pytorch:24.08-py3"
    for job in ("lepton-sweep-collect", "lepton-gate"):  # collecting and gating need no GPU
        assert "tags" not in child[job] and "image" not in child[job], child[job]
    for bad, needle in ((["--train-tag", ""], "--train-tag ''"), (["--train-image", "a b"], "--train-image 'a b'")):
        r = cli("sweep", "plan", "--format", "gitlab", *bad, cwd=tmp_path)
        assert r.code == 2 and needle in r.err and "Traceback" not in r.err, r


# ---- collect ---------------------------------------------------------------------------------------------


def run_jobs(tmp_path: Path, grid: str = "{lr: [0.01, 0.1, 1.9]}", tar: bool = False) -> tuple[Path, Path]:
    """Each combination trained in its own checkout (as a CI job would), its records and files uploaded into
    artifacts/<job>/ the way actions/upload-artifact or a GitLab job keeps them."""
    collector = project(tmp_path / "collector", grid)
    config = load_config(collector / "lepton.yml")
    artifacts = tmp_path / "artifacts"
    for entry in sweep.plan(config).entries():
        job = project(tmp_path / f"job-{entry['sweep_index']}", grid)
        record = train(load_config(job / "lepton.yml"), param_overrides={"lr": entry["lr"]}, quiet=True)
        dest = artifacts / f"sweep-run-{entry['sweep_index']}"
        (dest / ".lepton").mkdir(parents=True)
        shutil.copyfile(job / ".lepton" / "run.json", dest / ".lepton" / "run.json")
        shutil.copytree(job / ".lepton" / "runs", dest / ".lepton" / "runs")  # the copy collect must not count twice
        if tar:
            with tarfile.open(dest / ".lepton" / "train-files.tar", "w") as tf:
                for art in record.artifacts:
                    tf.add(job / art["path"], arcname=art["path"])
        else:
            for art in record.artifacts:
                shutil.copyfile(job / art["path"], dest / art["path"])
    return collector, artifacts


@pytest.mark.parametrize("packed", [False, True], ids=["files", "gitlab-tar"])
def test_collect_installs_the_best_run_for_gate_and_tag(tmp_path: Path, packed: bool) -> None:
    collector, artifacts = run_jobs(tmp_path, tar=packed)
    r = cli("sweep", "collect", str(artifacts), "--json", cwd=collector)
    assert r.code == 0, r
    board = json.loads(r.out)
    assert board["runs"] == 3 and board["objective"] == {"metric": "eval.mse", "direction": "lower"}
    ranked = [(row["rank"], row["params"]["lr"]) for row in board["leaderboard"]]
    assert ranked == [(1, 0.1), (2, 0.01), (3, 1.9)], ranked  # lr 1.9 overshoots; 0.01 is too slow in 30 epochs
    run = RunRecord.read(collector / ".lepton" / "run.json")
    assert run.run_id == board["best"] and run.params["lr"] == 0.1
    assert json.loads((collector / "model.json").read_text())["lr"] == 0.1
    assert run.extra["sweep"]["best"] == run.run_id
    assert json.loads((collector / ".lepton" / "sweep.json").read_text())["kind"] == "sweep"
    # the steps after it see one ordinary candidate
    gate = cli("gate", "-b", "none", cwd=collector)
    assert gate.code == 0, gate
    tag = cli("tag", cwd=collector)
    assert tag.code == 0, tag
    report = cli("report", cwd=collector)
    assert report.code == 0, report
    text = report.out  # `lepton-ci report` prints the markdown
    assert "### Sweep: 3 runs, best by `eval.mse` (lower is better)" in text
    assert f"`{run.run_id}` 🏆" in text and 'x-axis "lr" ["0.01", "0.1", "1.9"]' in text


def test_collect_refuses_a_file_changed_after_training(tmp_path: Path) -> None:
    collector, artifacts = run_jobs(tmp_path, grid="{lr: [0.1, 1.9]}")
    board = sweep.rank(load_config(collector / "lepton.yml"), sweep.find_runs([artifacts]))
    best_dir = board.best.path.parent.parent
    (best_dir / "model.json").write_text('{"w": 0, "b": 0}')
    r = cli("sweep", "collect", str(artifacts), cwd=collector)
    assert_one_line_error(r, 2, "model.json", "does not match its recorded sha256")
    assert not (collector / "model.json").exists() and not (collector / ".lepton" / "run.json").exists()


def test_failed_runs_are_listed_last_and_a_missing_metric_is_an_error(tmp_path: Path) -> None:
    collector, artifacts = run_jobs(tmp_path, grid="{lr: [0.1, 1.9]}")
    config = load_config(collector / "lepton.yml")
    first = artifacts / "sweep-run-0" / ".lepton" / "run.json"
    data = json.loads(first.read_text())
    data["exit"]["status"], data["exit"]["code"] = "failed", 3
    first.write_text(json.dumps(data))
    result = sweep.rank(config, sweep.find_runs([artifacts]))
    assert [e.rank for e in result.entries] == [1, None]
    assert result.entries[-1].record.exit["status"] == "failed"
    second = artifacts / "sweep-run-1" / ".lepton" / "run.json"
    data = json.loads(second.read_text())
    data["metrics"].pop("eval.mse")
    second.write_text(json.dumps(data))
    with pytest.raises(UserError, match="has no metric 'eval.mse'"):
        sweep.rank(config, sweep.find_runs([artifacts]))


def test_collect_with_no_runs_is_one_line(tmp_path: Path) -> None:
    project(tmp_path)
    (tmp_path / "empty").mkdir()
    assert_one_line_error(cli("sweep", "collect", "empty", cwd=tmp_path), 2, "no run.json under empty")


def test_param_chart_orders_numbers_and_keeps_the_best_per_value() -> None:
    from lepton_ci.charts import param_chart

    chart = param_chart("lr", "loss", [(1, 0.5), (0.1, 0.2), (0.1, 0.1), (0.01, 0.9)], "lower")
    assert chart is not None
    assert 'x-axis "lr" ["0.01", "0.1", "1"]' in chart and "bar [0.9, 0.1, 0.5]" in chart
    assert param_chart("lr", "loss", [(1, 0.5)]) is None
