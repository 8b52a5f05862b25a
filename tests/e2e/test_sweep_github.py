"""The sweep action, run for real by act: tests/e2e/workflows/checks/sweep.yml on tests/e2e/sweep_project (a
pure-Python regression with the sources' learning-rate grid [0.01, 0.1, 1]).

The plan job's `matrix` output drives the train jobs through `fromJSON` (one per learning rate, each with the
train action's `params` from the matrix entry), the collect job picks the best run by eval.mse and the gate
action gates it. The lab (act in host mode, the GitHub API stand-in, the offline wheelhouse) is
tests/e2e/test_github_actions.py's; the runs travel through a host directory instead of actions/upload-artifact,
which act cannot fetch offline (the workflow says so).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.e2e.test_github_actions import (  # noqa: F401 (fixtures)
    REPO,
    WORKFLOWS,
    Lab,
    _no_contract_violations,
    assert_succeeded,
    lab,
    pull_request_event,
    run_act,
    step_lines,
)
from tests.support.checkout import git

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parent / "sweep_project"


def test_plan_matrix_train_collect_and_gate(lab: Lab) -> None:
    repo = lab.dir / "sweep"
    shutil.copytree(PROJECT, repo, ignore=shutil.ignore_patterns("__pycache__", ".lepton", "runs"))
    (repo / ".gitignore").write_text(".lepton/\nruns/\n")
    git(repo, "init", "-q", "-b", "sweep")
    git(repo, "remote", "add", "origin", f"https://github.com/{REPO}.git")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "linear model with a learning-rate grid")
    sha = git(repo, "rev-parse", "HEAD")
    runs = lab.dir / "sweep-runs"
    event = pull_request_event(lab.dir / "event-sweep.json", 8, sha)
    run = run_act(
        lab,
        repo,
        WORKFLOWS / "checks" / "sweep.yml",
        event,
        {"lepton/ci@v1": lab.src},
        "sweep",
        # one job at a time: the train jobs would otherwise install the shared venv at once
        extra=["--var", f"SWEEP_RUNS={runs}", "--concurrent-jobs", "1"],
        timeout=600,
    )
    assert_succeeded(run)
    (line,) = step_lines(run.log, "sweep: ")
    m = re.fullmatch(r"sweep: jobs=3 best=(\S+) value=(\S+) verdict=pass", line)
    assert m, line
    kept = sorted(p.parent.parent.name for p in runs.glob("*/.lepton/run.json"))
    assert kept == ["sweep-run-0", "sweep-run-1", "sweep-run-2"]
    lrs = {json.loads(p.read_text())["run_id"]: json.loads(p.read_text())["params"]["lr"]
           for p in runs.glob("*/.lepton/run.json")}
    assert lrs[m.group(1)] == 0.1 and abs(float(m.group(2)) - 0.0235704) < 1e-6, (lrs, line)
