"""The sweep on GitLab, run for real by gitlab-ci-local: the `sweep` component's parent pipeline and the child
pipeline its trigger job runs.

The project is tests/e2e/sweep_project (a pure-Python regression with the sources' learning-rate grid
[0.01, 0.1, 1]) and its `.gitlab-ci.yml` is docs/sweep.md's `sweep-component` snippet. The parent pipeline has
the component's two jobs: `lepton-sweep-plan` (installs lepton-ci from the templates project's archive at the
component's commit and writes the child pipeline with `lepton-ci sweep plan --format gitlab`) and
`lepton-sweep`, whose `trigger: include: artifact:` gitlab-ci-local runs as a child pipeline: one
`parallel: matrix` train job per learning rate, the collect job that needs them all, then the classic
`.lepton-gate`, `.lepton-tag` and `.lepton-report` on the best run. Jobs run with the shell executor, each in its
own copy of the project, so the child pipeline and the runs really travel as artifacts.

gitlab-ci-local passes a child pipeline the trigger job's and the global variables, as GitLab does, but not
its own `--variable`s: what GitLab keeps in project settings (the signing key, the archive's API, the notes
API) is therefore given to both pipelines as gitlab-ci-local's project variables file. A failed child job
does not fail gitlab-ci-local's exit status, so every child job is checked by name.

The lab (gitlab-ci-local, the archive and notes API stand-ins) is tests/e2e/test_gitlab_ci.py's.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_gitlab_ci import (  # noqa: F401 (fixtures)
    ORIGIN_HOST,
    PROJECT_ID,
    SIGNING_KEY,
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
DOCS = ROOT / "docs" / "sweep.md"
VENV = "venv-sweep"


def doc_snippet(name: str) -> str:
    m = re.search(rf"<!-- test: {re.escape(name)} -->\n```yaml\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert m, f"docs/sweep.md has no snippet marked <!-- test: {name} -->"
    return m.group(1)


def sweep_repo(lab: Lab, name: str) -> Path:  # noqa: F811 (the fixture's value)
    repo = lab.dir / name
    shutil.copytree(PROJECT, repo, ignore=shutil.ignore_patterns("__pycache__", ".lepton", "runs"))
    (repo / ".gitignore").write_text(".gitlab-ci-local/\n.gitlab-ci-local-variables.yml\n.lepton/\n.lepton-venv/\n")
    ci = yaml.safe_load(doc_snippet("sweep-component"))
    # The venv input reaches the child pipeline through the trigger job: all jobs share the lab's venv.
    ci["include"][0]["inputs"]["venv"] = str(lab.dir / VENV)
    (repo / ".gitlab-ci.yml").write_text(yaml.safe_dump(ci, sort_keys=False))
    # Project-level CI/CD variables, as GitLab gives them to the parent and the child pipeline alike.
    project_variables = {
        "GITLAB_CI": "true",
        "CI_API_V4_URL": lab.standin.api,
        "CI_PROJECT_ID": PROJECT_ID,
        "LEPTON_CI_SOURCE_API": lab.archive.api,
        "LEPTON_CI_SIGNING_KEY": SIGNING_KEY,
    }
    (repo / ".gitlab-ci-local-variables.yml").write_text(yaml.safe_dump(project_variables))
    # lepton/ci-templates, offline: the component at its tag, and the classic lepton.yml the child pipeline
    # includes at the component's commit.
    includes = repo / ".gitlab-ci-local" / "includes" / ORIGIN_HOST / TEMPLATES_PROJECT
    for ref in (TEMPLATES_REF, lab.archive.sha):
        shutil.copytree(ROOT / "gitlab-templates", includes / ref)
    _git(repo, "init", "-q", "-b", "sweep")
    _git(repo, "remote", "add", "origin", f"https://{ORIGIN_HOST}/acme/{name}.git")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "linear model with a learning-rate grid")
    return repo


def test_sweep_component_trains_every_learning_rate_in_a_child_pipeline_and_gates_and_tags_the_best(
    lab: Lab,  # noqa: F811 (the fixture)
) -> None:
    repo = sweep_repo(lab, "sweep")
    # One job at a time: the lab's jobs share one venv (installed by the plan job), and three train jobs
    # installing it at once would race; on GitLab each job has its own.
    run = gcl(lab, repo, "--concurrency", "1", iid=None, venv=VENV, token=None, timeout=900)
    assert run.code == 0, run
    assert {"lepton-sweep-plan", "lepton-sweep"} <= run.passed(), run
    # The plan job installed lepton-ci from the templates project's archive at the component's commit; the child
    # pipeline's jobs found that venv as it was (same package at the same commit, from the trigger's variables).
    url = lab.archive.url(lab.archive.sha)
    assert f"lepton-ci: installing lepton-ci @ {url}" in run.job_log("lepton-sweep-plan"), run
    assert "lepton-ci: installing" not in run.job_log("lepton-sweep-collect")
    artifacts = repo / ".gitlab-ci-local" / "artifacts"
    child = yaml.safe_load((artifacts / "lepton-sweep-plan" / ".lepton" / "sweep-pipeline.yml").read_text())
    include = {"project": TEMPLATES_PROJECT, "ref": lab.archive.sha, "file": "/lepton.yml"}
    assert child["include"] == [include], child["include"]
    assert "LEPTON_JOBS=3" in (artifacts / "lepton-sweep-plan" / ".lepton" / "sweep-plan.env").read_text()

    child_passed = set(re.findall(r"^\s*PASS\s+\[lepton-sweep\] -> (\S+(?: \[[^\]]*\])?)", run.output, flags=re.M))
    trained = sorted(re.findall(r"lepton-sweep-train: \[lr=([\d.]+)\]", " ".join(child_passed)))
    assert trained == ["0.01", "0.1", "1"], run
    assert {"lepton-sweep-collect", "lepton-gate", "lepton-tag", "lepton-report"} <= child_passed, run

    best = json.loads((artifacts / "lepton-sweep-collect" / ".lepton" / "run.json").read_text())
    assert best["params"]["lr"] == 0.1, best["params"]
    board = best["sweep"]["leaderboard"]
    assert [row["params"]["lr"] for row in board] == [0.1, 0.01, 1]
    gate = json.loads((artifacts / "lepton-gate" / ".lepton" / "gate.json").read_text())
    assert gate["verdict"] == "pass" and gate["candidate"]["run_id"] == best["run_id"]
    version = json.loads((artifacts / "lepton-tag" / ".lepton" / "version.json").read_text())
    assert version["version"] == 1, version
    assert "lepton-ci: best of 3 run(s) by eval.mse (lower)" in run.job_log("lepton-sweep-collect")
    report = (artifacts / "lepton-report" / ".lepton" / "report.md").read_text()
    assert "### Sweep: 3 runs, best by `eval.mse`" in report and best["run_id"] in report, report
