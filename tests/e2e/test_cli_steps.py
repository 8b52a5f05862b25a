"""The CLI end to end, one real subprocess per command: train, gate, tag, registry, report, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lepton_ci.fsutil import sha256_file
from tests.e2e.helpers import assert_one_line_error, cli, make_project
from tests.support.keys import PRIVATE_PEM

KEY = {"LEPTON_CI_SIGNING_KEY": PRIVATE_PEM}


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    root = make_project(tmp_path / "proj")
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "init"],
                   cwd=root, check=True)
    return root


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_help_and_version_do_not_import_heavy_modules() -> None:
    code = ("import sys\nfrom lepton_ci.cli import main\nrc = main(['--help'])\nrc2 = main(['--version'])\n"
            "heavy = [m for m in ('numpy','yaml','jinja2','requests','jsonschema','sklearn','torch','tensorflow','docker') if m in sys.modules]\n"
            "print('HEAVY', heavy, rc, rc2)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY [] 0 0" in out
    assert "lepton-ci 0." in out
    for cmd in ("train", "gate", "tag", "deploy", "report", "registry", "metrics", "run", "config"):
        assert cmd in out


def test_every_subcommand_has_help(tmp_path: Path) -> None:
    for args in (["train"], ["gate"], ["tag"], ["report"], ["run"], ["metrics", "diff"], ["deploy"], ["deploy", "status"],
                 ["deploy", "stop"], ["deploy", "rollback"], ["registry", "list"], ["registry", "show"],
                 ["registry", "history"], ["registry", "promote"], ["registry", "rollback"], ["registry", "check"],
                 ["config", "validate"], ["config", "schema"]):
        r = cli(*args, "--help", cwd=tmp_path)
        assert r.code == 0 and "Usage:" in r.out, (args, r)


def test_train_records_everything(project: Path) -> None:
    r = cli("train", "-p", "acc=0.8", cwd=project, env=KEY)
    assert r.code == 0, r
    assert "trained acc=0.8" in r.out  # live output of the command
    run = read(project / ".lepton/run.json")
    assert run["kind"] == "run" and run["schema_version"] == 1 and run["model"] == "toy"
    assert run["params"]["acc"] == 0.8
    assert run["metrics"] == {"eval.accuracy": 0.8, "eval.loss": pytest.approx(0.2), "epochs": 3, "fit_seconds": 0.5}
    assert run["artifacts"] == [{"path": "model.bin", "sha256": sha256_file(project / "model.bin"), "size": 11}]
    assert run["artifacts_digest"].startswith("sha256:")
    assert run["git"]["sha"] and len(run["git"]["sha"]) == 40 and run["git"]["ref"] == "main"
    assert run["git"]["dirty"] is False
    assert run["environment"]["python"].startswith("3.") and "lepton-ci" in run["environment"]["packages"]
    assert isinstance(run["environment"]["gpus"], list)
    assert run["exit"] == {"code": 0, "status": "succeeded", "log": run["exit"]["log"]}
    assert (project / run["exit"]["log"]).read_text().strip().endswith("trained acc=0.8")
    assert run["timing"]["duration_s"] >= 0


def test_train_failure_and_timeout_exit_1_and_keep_the_record(project: Path) -> None:
    r = cli("train", "-p", "fail=true", cwd=project)
    assert_one_line_error(r, 1, "exited with code 3")
    assert read(project / ".lepton/run.json")["exit"]["status"] == "failed"
    r = cli("train", "-p", "sleep=30", "--timeout", "0.5", cwd=project)
    assert_one_line_error(r, 1, "timed out after 0.5s")
    assert read(project / ".lepton/run.json")["exit"]["status"] == "timed_out"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"eval": {"accuracy": 0.9', "malformed JSON"),
        ('[1, 2]', "must hold a mapping"),
    ],
)
def test_bad_metrics_files_exit_2(project: Path, content: str, needle: str) -> None:
    script = f"open('metrics.json','w').write({content!r}); open('model.bin','w').write('m')\n"
    (project / "train.py").write_text(script)
    r = cli("train", cwd=project)
    assert_one_line_error(r, 2, "metrics.json", needle)


@pytest.mark.parametrize("value, shown", [("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf")])
def test_a_non_finite_metric_is_skipped_with_a_note_and_the_gate_names_it(project: Path, value: str, shown: str) -> None:
    """One NaN no longer hides the file's other metrics; the gate rule on the skipped metric fails by name."""
    content = f'{{"eval": {{"accuracy": {value}, "loss": 0.1}}, "epochs": 3}}'
    (project / "train.py").write_text(f"open('metrics.json','w').write({content!r}); open('model.bin','w').write('m')\n")
    r = cli("train", cwd=project)
    assert r.code == 0, r
    assert f"'eval.accuracy' is {shown}" in r.err
    metrics = read(project / ".lepton/run.json")["metrics"]
    assert metrics == {"eval.loss": 0.1, "epochs": 3}
    r = cli("gate", "--baseline", "none", cwd=project)
    assert r.code == 1 and "eval.accuracy" in r.out, r


def test_missing_metrics_file_and_artifact_name_the_config_line(project: Path) -> None:
    (project / "train.py").write_text("open('model.bin','w').write('m')\n")
    r = cli("train", cwd=project)
    assert_one_line_error(r, 2, "lepton.yml:6", "metrics.json", "not written")
    (project / "model.bin").unlink()
    (project / "train.py").write_text("open('metrics.json','w').write('{\"a\": 1}')\n")
    r = cli("train", cwd=project)
    assert_one_line_error(r, 2, "lepton.yml:7", "model.bin", "matched no file")


def test_stale_metrics_file_is_an_error_and_stale_artifact_a_warning(project: Path) -> None:
    assert cli("train", cwd=project).code == 0
    import os

    for name in ("metrics.json", "model.bin"):
        os.utime(project / name, (1_000_000_000, 1_000_000_000))
    (project / "train.py").write_text("print('did nothing')\n")
    assert_one_line_error(cli("train", cwd=project), 2, "lepton.yml:6", "older than this run")
    (project / "train.py").write_text("open('metrics.json','w').write('{\"a\": 1}')\n")
    r = cli("train", cwd=project)
    assert r.code == 0 and "warning: artifact model.bin was not written by this run" in r.err, r
    assert read(project / ".lepton/run.json")["warnings"] == ["artifact model.bin was not written by this run"]


@pytest.mark.parametrize(
    ("config", "needles"),
    [
        ("model: {name: toy}\ntrain:\n  command: x\n  comand: y\n", ["lepton.yml:4", "unknown key 'train.comand'", "did you mean 'command'"]),
        ("model: {name: toy}\ntrain:\n  command: x\n  timeout: soon\n", ["lepton.yml:4", "'train.timeout' must be a number"]),
        ("model: {}\n", ["lepton.yml:1", "'model' is missing required key 'name'"]),
        ("model: {name: toy}\ngate:\n  rules:\n    - metric: a\n", ["lepton.yml:4", "'gate.rules[0]' needs at least one of"]),
        ("model: {name: toy}\nmodel: {name: x}\n", ["lepton.yml:2", "duplicate key 'model'"]),
        ("model: [\n", ["lepton.yml:", "not valid YAML"]),
    ],
)
def test_config_errors_name_file_line_and_key(tmp_path: Path, config: str, needles: list[str]) -> None:
    (tmp_path / "lepton.yml").write_text(config)
    r = cli("train", cwd=tmp_path)
    assert_one_line_error(r, 2, *needles)


def test_missing_config_and_bad_flag(tmp_path: Path) -> None:
    assert_one_line_error(cli("train", cwd=tmp_path), 2, "config file not found")
    assert_one_line_error(cli("train", "--timeout", "-1", cwd=tmp_path), 2, "--timeout")
    assert_one_line_error(cli("train", "-p", "novalue", cwd=tmp_path / ".."), 2)


def test_gate_tag_registry_report_flow(project: Path) -> None:
    assert cli("train", "-p", "acc=0.9", cwd=project, env=KEY).code == 0
    dotenv = project / "gate.env"
    r = cli("gate", cwd=project, env={**KEY, "LEPTON_CI_DOTENV": str(dotenv)})
    assert r.code == 0, r
    assert "no baseline (first run)" in r.out and "verdict: pass (signed)" in r.out
    assert "baseline: none (first run: no 'production' in the registry yet)" in r.out
    outputs = dict(line.split("=", 1) for line in dotenv.read_text().splitlines())
    assert outputs["LEPTON_BASELINE_SOURCE"] == "none" and outputs["LEPTON_BASELINE_VERSION"] == ""
    assert outputs["LEPTON_BASELINE_REF"] == "production" and outputs["LEPTON_VERDICT"] == "pass"
    gate = read(project / ".lepton/gate.json")
    assert gate["verdict"] == "pass" and gate["signature"]["alg"] == "ecdsa-p256-sha256"
    assert gate["baseline"]["metrics"] is None
    assert len(gate["results"]) == 3

    r = cli("tag", cwd=project, env=KEY)
    assert r.code == 0 and "toy v1 registered" in r.out, r
    assert cli("registry", "promote", "1", "production", cwd=project).code == 0

    # A better candidate passes against production; a worse one fails with exit 1.
    assert cli("train", "-p", "acc=0.92", cwd=project, env=KEY).code == 0
    github_output = project / "github-output"
    github_output.write_text("")
    r = cli("gate", cwd=project, env={**KEY, "GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(github_output)})
    assert r.code == 0, r
    assert read(project / ".lepton/gate.json")["baseline"]["version"] == 1
    assert "baseline: registry production = v1 (sha256:" in r.out
    outputs = dict(line.split("=", 1) for line in github_output.read_text().splitlines())
    assert outputs["baseline-source"] == "registry" and outputs["baseline-version"] == "1"
    assert outputs["baseline"].startswith("registry production = v1 (sha256:")
    assert cli("tag", cwd=project, env=KEY).code == 0

    assert cli("train", "-p", "acc=0.8", cwd=project, env=KEY).code == 0
    r = cli("gate", cwd=project, env=KEY)
    assert_one_line_error(r, 1, "gate failed", "eval.accuracy max_drop", "eval.loss max_drop_pct")
    results = {(x["metric"], x["rule"]): x for x in read(project / ".lepton/gate.json")["results"]}
    assert results[("eval.accuracy", "max_drop")]["passed"] is False
    assert results[("eval.accuracy", "max_drop")]["delta"] == pytest.approx(-0.1)
    assert results[("eval.accuracy", "min")]["passed"] is True
    r = cli("tag", cwd=project, env=KEY)
    assert_one_line_error(r, 1, "gate verdict is fail")

    r = cli("report", cwd=project)
    assert r.code == 0, r
    assert "<!-- lepton-ci:report model=toy -->" in r.out
    assert "gate failed" in r.out
    assert "**Baseline:** `production` = v1 (`sha256:" in r.out
    assert "| `eval.accuracy` | 0.9 | 0.8 | -0.1 (-11.11%) | ▼ 🔴 |" in r.out
    assert "| `eval.loss` | 0.1 | 0.2 | +0.1 (+100.00%) | ▲ 🔴 |" in r.out
    assert "❌ | `eval.accuracy` | max_drop" in r.out
    out_file = project / "report.md"
    assert cli("report", "-o", str(out_file), cwd=project).code == 0
    assert out_file.read_text() == r.out

    r = cli("registry", "list", "--json", cwd=project)
    rows = json.loads(r.out)
    assert [(x["version"], x["aliases"]) for x in rows] == [(1, ["production"]), (2, ["candidate"])]
    r = cli("registry", "show", "production", cwd=project)
    assert "toy v1" in r.out and "eval.accuracy = 0.9" in r.out
    assert cli("registry", "promote", "v2", "production", cwd=project).code == 0
    r = cli("registry", "rollback", "production", cwd=project)
    assert r.code == 0 and "v2 -> v1" in r.out, r
    hist = json.loads(cli("registry", "history", "--alias", "production", "--json", cwd=project).out)
    assert [(h["from"], h["to"], h["action"]) for h in hist] == [(None, 1, "move"), (1, 2, "move"), (2, 1, "rollback")]
    assert hist[1]["prev"] and hist[2]["prev"]
    r = cli("registry", "check", cwd=project)
    assert r.code == 0 and "OK" in r.out, r


def test_gate_bad_inputs(project: Path) -> None:
    assert_one_line_error(cli("gate", cwd=project), 2, "run record not found")
    assert cli("train", cwd=project, env=KEY).code == 0
    assert_one_line_error(cli("gate", "--baseline", "staging", cwd=project), 2, "no registry")
    assert cli("gate", cwd=project, env=KEY).code == 0 and cli("tag", cwd=project, env=KEY).code == 0
    assert_one_line_error(cli("gate", "--baseline", "staging", cwd=project), 2, "no alias 'staging'")
    # A rule on a metric the candidate lacks fails the gate and names metric and files.
    cfg = (project / "lepton.yml").read_text().replace("metric: eval.loss", "metric: eval.f1")
    (project / "lepton.yml").write_text(cfg)
    r = cli("gate", cwd=project)
    assert_one_line_error(r, 1, "eval.f1")
    reasons = [x["reason"] for x in read(project / ".lepton/gate.json")["results"] if not x["passed"]]
    assert reasons == ["metric 'eval.f1' is missing from the candidate (run.json; metrics files: metrics.json)"]


def test_gate_baseline_from_git_ref_and_run_file(project: Path) -> None:
    assert cli("train", "-p", "acc=0.9", cwd=project).code == 0
    subprocess.run(["git", "add", "-f", "metrics.json"], cwd=project, check=True)
    subprocess.run(["git", "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "m"], cwd=project, check=True)
    (project / "base-run.json").write_text((project / ".lepton/run.json").read_text())
    assert cli("train", "-p", "acc=0.7", cwd=project).code == 0
    r = cli("gate", "--baseline", "git:HEAD", cwd=project)
    assert r.code == 1 and "baseline: git:HEAD" in r.out, r
    assert read(project / ".lepton/gate.json")["baseline"]["metrics"]["eval.accuracy"] == 0.9
    r = cli("gate", "--baseline", "base-run.json", cwd=project)
    assert r.code == 1 and "baseline: run base-run.json" in r.out, r
    assert_one_line_error(cli("gate", "--baseline", "git:nope", cwd=project), 2, "unknown git revision 'nope'")
    r = cli("gate", "--baseline", "none", cwd=project)
    assert r.code == 0, r
    assert "baseline: none (baseline disabled)" in r.out


def test_registry_errors(project: Path, tmp_path: Path) -> None:
    assert_one_line_error(cli("registry", "list", cwd=project), 2, "no registry at")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "data.txt").write_text("x")
    r = cli("registry", "--registry", f"file://{junk}", "list", cwd=project)
    assert_one_line_error(r, 2, "is not a lepton-ci registry")
    assert sorted(p.name for p in junk.iterdir()) == ["data.txt"]
    # tag into a non-registry directory writes nothing there
    (project / "lepton.yml").write_text((project / "lepton.yml").read_text() + f"registry: file://{junk}\n")
    assert cli("train", cwd=project, env=KEY).code == 0
    # the gate fails closed: a directory that is not a registry is never "no baseline"
    assert_one_line_error(cli("gate", cwd=project, env=KEY), 2, "is not a lepton-ci registry")
    assert cli("gate", "--baseline", "none", cwd=project, env=KEY).code == 0
    assert_one_line_error(cli("tag", cwd=project, env=KEY), 2, "is not a lepton-ci registry")
    assert sorted(p.name for p in junk.iterdir()) == ["data.txt"]
    assert_one_line_error(cli("registry", "--registry", "s3://x", "list", cwd=project), 2, "not understood")


def test_registry_check_detects_tampering(project: Path) -> None:
    for _ in range(2):
        assert cli("train", cwd=project, env=KEY).code == 0
        assert cli("gate", cwd=project, env=KEY).code == 0
        assert cli("tag", cwd=project, env=KEY).code == 0
    assert cli("registry", "check", cwd=project).code == 0
    shown = json.loads(cli("registry", "show", "1", "--json", cwd=project).out)
    blob = project / ".lepton/registry/blobs/sha256" / shown["artifacts"][0]["sha256"]
    blob.write_bytes(b"tampered")
    r = cli("registry", "check", cwd=project)
    assert r.code == 1 and "is corrupt" in r.out, r
    assert_one_line_error(cli("registry", "show", "9", cwd=project), 2, "no version 9")
    assert cli("registry", "promote", "1", "staging", cwd=project).code == 0
    assert_one_line_error(cli("registry", "rollback", "staging", cwd=project), 2, "no previous target")
    assert_one_line_error(cli("registry", "rollback", "nope", cwd=project), 2, "no alias 'nope'")


def test_config_validate_and_schema(project: Path) -> None:
    r = cli("config", "validate", cwd=project)
    assert r.code == 0 and "OK (model toy" in r.out, r
    schema = json.loads(cli("config", "schema", cwd=project).out)
    assert schema["title"] == "lepton.yml" and "gate" in schema["properties"]
    (project / "lepton.yml").write_text("model: {name: Bad Name}\n")
    assert_one_line_error(cli("config", "validate", cwd=project), 2, "lepton.yml:1", "'model.name' must match")


def test_debug_shows_traceback_and_keeps_the_exit_code(tmp_path: Path) -> None:
    r = cli("--debug", "train", cwd=tmp_path)
    assert r.code == 2 and "Traceback" in r.err and "config file not found" in r.err, r
    r = cli("train", cwd=tmp_path, env={"LEPTON_CI_DEBUG": "whatever"})
    assert_one_line_error(r, 2, "config file not found")


def test_deploy_flags_belong_to_deploy_itself(project: Path) -> None:
    assert_one_line_error(cli("deploy", "--version", "3", "status", cwd=project), 2, "--version goes with `lepton-ci deploy`")


def test_env_values_use_yaml_spelling(project: Path) -> None:
    (project / "train.py").write_text(
        "import os, json\nopen('metrics.json','w').write(json.dumps({'a': 1}))\nopen('model.bin','w').write('m')\n"
        "print('FLAG=' + os.environ['LEPTON_PARAM_FLAG'] + ' LIST=' + os.environ['LEPTON_PARAM_SIZES'])\n")
    r = cli("train", "-p", "flag=true", "-p", "sizes=[1, 2]", cwd=project)
    assert r.code == 0 and "FLAG=true LIST=[1, 2]" in r.out, r


def test_train_and_gate_without_git_take_the_commit_from_the_ci(project: Path, tmp_path: Path) -> None:
    """GitLab's Docker executor clones with its helper image, so the job image (python:3.12-slim) has the
    checkout but no git binary: train and gate must still run, and record what the CI says it checked out.
    Reading a revision (`git:REF`) still needs git and says so."""
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    no_git = tmp_path / "bin-without-git"
    no_git.mkdir()
    env = {
        **KEY,
        "PATH": str(no_git),
        "GITLAB_CI": "true",
        "CI_COMMIT_SHA": "0123456789abcdef0123456789abcdef01234567",
        "CI_COMMIT_REF_NAME": "feature/x",
        "CI_PROJECT_URL": "https://gitlab-ci-token:secret@gitlab.example/group/proj",
    }
    for var in ("GITHUB_SHA", "GITHUB_HEAD_REF", "GITHUB_REF_NAME", "GITHUB_REPOSITORY"):
        env[var] = ""
    r = cli("train", cwd=project, env=env)
    assert r.code == 0, r
    git = read(project / ".lepton/run.json")["git"]
    assert git == {
        "sha": "0123456789abcdef0123456789abcdef01234567",
        "ref": "feature/x",
        "repo": "https://gitlab.example/group/proj",
        "dirty": None,
    }
    assert cli("gate", cwd=project, env=env).code == 0
    assert_one_line_error(cli("gate", "--baseline", "git:HEAD", cwd=project, env=env), 2, "git is not installed")
