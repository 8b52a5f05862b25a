"""`lepton-ci metrics diff` through the CLI, on a real git repository."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import assert_one_line_error, cli


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@e", "-c", "user.name=t", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "lepton.yml").write_text("model: {name: m}\ntrain:\n  command: 'true'\n  metrics: [m.json, sub/m.yaml, m.toml]\n")
    (root / "m.json").write_text(json.dumps({"eval": {"acc": 0.9, "loss": 0.3}, "n": 10}))
    (root / "sub").mkdir()
    (root / "sub/m.yaml").write_text("auc: 0.8\nnested:\n  deep:\n    x: 1.5\n")
    (root / "m.toml").write_text("[perf]\nlatency_ms = 12.0\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "one")
    (root / "m.json").write_text(json.dumps({"eval": {"acc": 0.95, "loss": 0.3}, "n": 10, "new": 1}))
    (root / "sub/m.yaml").write_text("auc: 0.7\nnested:\n  deep:\n    x: 1.5\n")
    (root / "m.toml").unlink()
    return root


def test_json_output_head_vs_workspace(repo: Path) -> None:
    r = cli("metrics", "diff", "--json", cwd=repo)
    assert r.code == 0, r
    data = json.loads(r.out)
    assert data["a"] == "HEAD" and data["b"] == "workspace"
    assert data["files"]["m.json"]["eval.acc"] == {"old": 0.9, "new": 0.95, "diff": pytest.approx(0.05), "pct": pytest.approx(5.55556, rel=1e-4)}
    assert data["files"]["m.json"]["new"] == {"old": None, "new": 1, "diff": None, "pct": None}
    assert "eval.loss" not in data["files"]["m.json"]  # unchanged metrics hidden without --all
    assert data["files"]["sub/m.yaml"]["auc"]["diff"] == pytest.approx(-0.1)
    assert data["files"]["m.toml"]["perf.latency_ms"] == {"old": 12.0, "new": None, "diff": None, "pct": None}
    assert "m.toml: missing at workspace" in data["notes"]


def test_all_precision_table_and_markdown(repo: Path) -> None:
    r = cli("metrics", "diff", "--all", "--precision", "2", cwd=repo)
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines[0].split() == ["Path", "Metric", "HEAD", "workspace", "Change", "Change", "%"]
    assert any(line.split() == ["m.json", "eval.loss", "0.3", "0.3", "0", "0.00%"] for line in lines), r.out
    assert any(line.split() == ["m.json", "eval.acc", "0.9", "0.95", "+0.05", "+5.56%"] for line in lines), r.out
    assert "note: m.toml: missing at workspace" in r.out
    md = cli("metrics", "diff", "--md", cwd=repo).out
    assert "| Path | Metric | `HEAD` | `workspace` | Change | Change % |" in md
    assert "| sub/m.yaml | auc | 0.8 | 0.7 | -0.1 | -12.50% |" in md


def test_between_revisions_and_targets(repo: Path) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "two")
    r = cli("metrics", "diff", "HEAD~1", "HEAD", "--json", "-t", "m.json", cwd=repo)
    data = json.loads(r.out)
    assert list(data["files"]) == ["m.json"] and data["files"]["m.json"]["eval.acc"]["new"] == 0.95
    r = cli("metrics", "diff", "HEAD", "--json", cwd=repo)
    assert json.loads(r.out)["files"] == {}
    assert "No metric changed." in cli("metrics", "diff", cwd=repo).out


def test_malformed_file_at_one_side_is_a_note_and_the_rest_goes_on(repo: Path) -> None:
    (repo / "sub/m.yaml").write_text("auc: [unclosed\n")
    r = cli("metrics", "diff", "--json", cwd=repo)
    assert r.code == 0, r
    data = json.loads(r.out)
    assert "eval.acc" in data["files"]["m.json"]
    assert any("sub/m.yaml" in n and "malformed YAML" in n for n in data["notes"]), data["notes"]


def test_errors(repo: Path, tmp_path: Path) -> None:
    assert_one_line_error(cli("metrics", "diff", "nope", cwd=repo), 2, "unknown git revision 'nope'")
    assert_one_line_error(cli("metrics", "diff", "--md", "--json", cwd=repo), 2, "exclude each other")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(cli("metrics", "diff", cwd=empty), 2, "--targets")
    assert_one_line_error(cli("metrics", "diff", "HEAD", "-t", "x.json", cwd=empty), 2, "not inside a git repository")


def test_renamed_metrics_file_in_lepton_yml_shows_removed_and_added(repo: Path) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "two")
    (repo / "lepton.yml").write_text("model: {name: m}\ntrain:\n  command: 'true'\n  metrics: [./renamed.json, sub/m.yaml]\n")
    git(repo, "mv", "m.json", "renamed.json")
    git(repo, "commit", "-qam", "rename")
    r = cli("metrics", "diff", "HEAD~1", "HEAD", "--json", cwd=repo)
    assert r.code == 0, r
    data = json.loads(r.out)
    assert data["files"]["m.json"]["eval.acc"] == {"old": 0.95, "new": None, "diff": None, "pct": None}
    assert data["files"]["renamed.json"]["eval.acc"] == {"old": None, "new": 0.95, "diff": None, "pct": None}
    assert "sub/m.yaml" not in data["files"]  # unchanged
    assert "m.json: not listed in lepton.yml at HEAD" in data["notes"]


def test_dvc_project_without_lepton_yml(tmp_path: Path) -> None:
    root = tmp_path / "dvc"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "dvc.yaml").write_text("stages:\n  train:\n    cmd: python t.py\n    metrics:\n      - m.yaml:\n          cache: false\n")
    (root / "m.yaml").write_text("lr: 1e-3\non: 1\nacc: 0.5\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "one")
    (root / "m.yaml").write_text("lr: 2e-3\non: 1\nacc: 0.5\n")
    r = cli("metrics", "diff", "--json", "--all", cwd=root)
    assert r.code == 0, r
    data = json.loads(r.out)
    assert data["files"]["m.yaml"]["lr"] == {"old": 0.001, "new": 0.002, "diff": pytest.approx(0.001), "pct": pytest.approx(100.0)}
    assert set(data["files"]["m.yaml"]) == {"lr", "on", "acc"}
    assert data["notes"] == []


def test_dot_slash_target_is_the_same_file(repo: Path) -> None:
    r = cli("metrics", "diff", "--json", "-t", "./m.json", "-t", "m.json", cwd=repo)
    assert r.code == 0, r
    assert list(json.loads(r.out)["files"]) == ["m.json"]
