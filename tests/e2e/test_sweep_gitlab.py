"""The sweep's GitLab child pipeline, run for real by gitlab-ci-local.

`lepton-ci sweep plan --format gitlab` writes the child pipeline for tests/e2e/sweep_project (a pure-Python
regression with the sources' learning-rate grid [0.01, 0.1, 1]); it is run here as the project's pipeline, as
GitLab runs a `trigger: include: artifact:` child: one `parallel: matrix` train job per learning rate (the
classic include's `.lepton-setup` installs lepton-ci from the templates project's archive), the collect job
that needs them all, then the classic `.lepton-gate` and `.lepton-tag` on the best run. Jobs run with the shell
executor, each in its own copy of the project, so the runs really travel as artifacts.

The lab (gitlab-ci-local, the archive and notes API stand-ins) is tests/e2e/test_gitlab_ci.py's.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_gitlab_ci import (  # noqa: F401 (fixtures)
    ORIGIN_HOST,
    TEMPLATES_PROJECT,
    TEMPLATES_REF,
    Lab,
    _git,
    _no_contract_violations,
    gcl,
    lab,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROJECT = Path(__file__).resolve().parent / "sweep_project"
INCLUDE = f"{{project: {TEMPLATES_PROJECT}, ref: '{TEMPLATES_REF}', file: lepton.yml}}"


def sweep_repo(lab: Lab, name: str) -> Path:
    repo = lab.dir / name
    shutil.copytree(PROJECT, repo, ignore=shutil.ignore_patterns("__pycache__", ".lepton", "runs"))
    (repo / ".gitignore").write_text(".gitlab-ci-local/\n.lepton/\n.lepton-venv/\n")
    plan = subprocess.run(
        [sys.executable, "-m", "lepton_ci.cli", "sweep", "plan", "--format", "gitlab", "--include", INCLUDE,
         "--then", "gate", "--then", "tag", "--output", ".gitlab-ci.yml"],
        cwd=repo, capture_output=True, text=True, timeout=60,
    )
    assert plan.returncode == 0, plan.stderr
    cache = repo / ".gitlab-ci-local" / "includes" / ORIGIN_HOST / TEMPLATES_PROJECT / TEMPLATES_REF
    shutil.copytree(ROOT / "gitlab-templates", cache)
    _git(repo, "init", "-q", "-b", "sweep")
    _git(repo, "remote", "add", "origin", f"https://{ORIGIN_HOST}/acme/{name}.git")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "linear model with a learning-rate grid")
    return repo


def test_child_pipeline_trains_every_learning_rate_and_gates_and_tags_the_best(lab: Lab) -> None:
    repo = sweep_repo(lab, "sweep")
    # One job at a time: the lab's jobs share one venv (installed by the first job), and three train jobs
    # installing it at once would race; on GitLab each job has its own.
    run = gcl(lab, repo, "--concurrency", "1", iid=None, venv="venv-sweep", token=None, timeout=900)
    assert run.code == 0, run
    trained = re.findall(r"^\s*PASS\s+lepton-sweep-train: \[lr=([\d.]+)\]", run.output, flags=re.M)
    assert sorted(trained) == ["0.01", "0.1", "1"], run
    assert {"lepton-sweep-collect", "lepton-gate", "lepton-tag"} <= run.passed(), run
    artifacts = repo / ".gitlab-ci-local" / "artifacts"
    best = json.loads((artifacts / "lepton-sweep-collect" / ".lepton" / "run.json").read_text())
    assert best["params"]["lr"] == 0.1, best["params"]
    board = best["sweep"]["leaderboard"]
    assert [row["params"]["lr"] for row in board] == [0.1, 0.01, 1]
    gate = json.loads((artifacts / "lepton-gate" / ".lepton" / "gate.json").read_text())
    assert gate["verdict"] == "pass" and gate["candidate"]["run_id"] == best["run_id"]
    assert "lepton-ci: best of 3 run(s) by eval.mse (lower)" in run.job_log("lepton-sweep-collect")
