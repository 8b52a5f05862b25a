"""`lepton-ci run` without a deploy step: the report renders even when the gate fails, and nothing after
the failed gate (tag, build) runs."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.helpers import assert_one_line_error, cli, make_project
from tests.support.keys import PRIVATE_PEM

KEY = {"LEPTON_CI_SIGNING_KEY": PRIVATE_PEM}


def test_run_twice_then_a_regression_is_held_back(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    with open(root / "lepton.yml", "a") as f:
        f.write("steps: [train, gate, tag, report]\n")
    r = cli("run", "-p", "acc=0.9", cwd=root, env=KEY)
    assert r.code == 0, r
    assert "▶ train" in r.err and "▶ report" in r.err
    assert "gate passed" in r.out and "**v1**" in r.out
    assert (root / ".lepton/report.md").read_text() == r.out
    assert cli("registry", "promote", "1", "production", cwd=root).code == 0

    dotenv = root / "run.env"
    r = cli(
        "run",
        "-p",
        "acc=0.5",
        "--steps",
        "train,gate,tag,build,report",
        cwd=root,
        env={**KEY, "LEPTON_CI_DOTENV": str(dotenv)},
    )
    assert_one_line_error(r, 1, "gate failed: eval.accuracy max_drop")
    assert "- build: skipped (gate failed)" in r.err  # no image of a model the gate held back
    assert "  baseline: registry production = v1 (sha256:" in r.err
    outputs = dict(line.split("=", 1) for line in dotenv.read_text().splitlines())
    assert outputs["LEPTON_BASELINE_SOURCE"] == "registry" and outputs["LEPTON_BASELINE_VERSION"] == "1"
    assert "- tag: skipped (gate failed)" in r.err
    assert "gate failed" in r.out and "### Version" not in r.out  # the held-back run has no version
    versions = json.loads(cli("registry", "list", "--json", cwd=root).out)
    assert [v["version"] for v in versions] == [1]


def test_run_rejects_unknown_steps_and_stops_on_failed_training(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert_one_line_error(cli("run", "--steps", "train,fly", cwd=root), 2, "unknown step(s) fly")
    r = cli("run", "-p", "fail=1", cwd=root, env=KEY)
    assert_one_line_error(r, 1, "train: training command exited with code 3")
    assert "▶ gate" not in r.err
