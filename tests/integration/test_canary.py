"""No exit path prints a secret: a canary in every secret variable, many CLI invocations, and a scan of
everything they printed and wrote.

The canary sits in LEPTON_CI_SIGNING_KEY, the forge tokens and the registry password. lepton-ci is run
as a real subprocess through every subcommand with bad input, with no config, with a broken config, with
a training command that prints its whole environment (`env`) and fails, with `report --post` against an
API that is not there, and in-process with exceptions forced to escape (exit 2 and the "internal error"
exit 70, with and without --debug). Then the canary must be absent from stdout, stderr and every file
under the project (train.log, run.json, gate.json, report.md, the registry) and the job summary.

The one allowed appearance: an `::add-mask::<token>` line on stderr, the GitHub runner's own protocol for
masking (the runner consumes the line; it never reaches the log).

A second scenario uses a real PEM private key as LEPTON_CI_SIGNING_KEY, so the pipeline gets as far as a
signed gate and a tagged version; each line of the key is then a canary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import pytest

from tests.support.keys import PRIVATE_PEM

CANARY = "canary-9f3c2a71e5d04b8a"
SECRET_VARS = ("LEPTON_CI_SIGNING_KEY", "GITHUB_TOKEN", "GITLAB_TOKEN", "LEPTON_REGISTRY_PASSWORD", "GH_TOKEN",
               "LEPTON_CI_GITHUB_TOKEN", "LEPTON_CI_GITLAB_TOKEN", "CI_JOB_TOKEN", "LEPTON_API_TOKEN",
               "ACTIONS_RUNTIME_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_TOKEN")
PEM_LINES = tuple(line for line in PRIVATE_PEM.splitlines() if line and not line.startswith("-----"))

TRAIN = """\
import json
with open("metrics.json", "w") as f:
    json.dump({"eval": {"accuracy": 0.9}}, f)
with open("model.bin", "wb") as f:
    f.write(b"weights")
print("trained")
"""
CONFIG = """\
model:
  name: toy
train:
  command: {command}
  metrics: [metrics.json]
  artifacts: [model.bin]
gate:
  rules:
    - metric: eval.accuracy
      min: 0.5
"""


def clean_env() -> dict[str, str]:
    """The test's environment without anything a real CI or a developer set for a forge or for lepton-ci."""
    drop = ("GITHUB_", "GITLAB_", "CI_", "LEPTON_", "GH_", "RUNNER_", "ACTIONS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) and k != "CI"}
    env.update(LEPTON_CI_HTTP_RETRIES="0", LEPTON_CI_HTTP_BACKOFF="0.01", LEPTON_CI_HTTP_TIMEOUT="5",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    return env


@dataclass
class Scenario:
    secrets: dict[str, str]
    needles: tuple[str, ...]  # none of these may appear anywhere
    masks: set[str] = field(default_factory=set)  # `::add-mask::` lines allowed on stderr


def plain_canary() -> Scenario:
    return Scenario({name: CANARY for name in SECRET_VARS}, (CANARY, "9f3c2a71e5d04b8a"), {f"::add-mask::{CANARY}"})


def pem_key() -> Scenario:
    secrets = {name: CANARY for name in SECRET_VARS}
    secrets["LEPTON_CI_SIGNING_KEY"] = PRIVATE_PEM
    return Scenario(secrets, (CANARY, *PEM_LINES), {f"::add-mask::{CANARY}"})


@dataclass
class Outcome:
    args: tuple[str, ...]
    code: int
    out: str
    err: str


class Harness:
    """Runs lepton-ci in `root` with the scenario's secrets and checks every output as it goes."""

    def __init__(self, scenario: Scenario, root: Path, extra_env: dict[str, str] | None = None) -> None:
        self.scenario = scenario
        self.root = root
        self.env = {**clean_env(), **scenario.secrets, **(extra_env or {})}
        self.outcomes: list[Outcome] = []

    def __call__(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Outcome:
        proc = subprocess.run([sys.executable, "-m", "lepton_ci.cli", *args], cwd=cwd or self.root,
                              env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=180)
        outcome = Outcome(args, proc.returncode, proc.stdout, proc.stderr)
        self.outcomes.append(outcome)
        assert_clean(self.scenario, f"lepton-ci {' '.join(args)}", outcome.out, outcome.err)
        return outcome


def assert_clean(scenario: Scenario, what: str, out: str, err: str) -> None:
    assert "::add-mask::" not in out, (what, "::add-mask:: on stdout", out[-2000:])
    err_lines = [line for line in err.splitlines() if line not in scenario.masks]
    for needle in scenario.needles:
        assert needle not in out, (what, "secret on stdout", needle, out[-3000:])
        leaks = [line for line in err_lines if needle in line]
        assert not leaks, (what, "secret on stderr", needle, leaks)


def assert_no_file_holds_a_secret(scenario: Scenario, *roots: Path) -> list[Path]:
    scanned = []
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            for needle in scenario.needles:
                assert needle.encode() not in data, (f"secret in {path}", needle)
            scanned.append(path)
    return scanned


def project(root: Path, command: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.py").write_text(TRAIN)
    (root / "lepton.yml").write_text(CONFIG.format(command=command))
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "init"],
                   cwd=root, check=True)
    return root


def every_command() -> list[tuple[str, ...]]:
    """Every subcommand path (groups and their commands), read from the real click tree."""
    from lepton_ci.cli import cli

    paths: list[tuple[str, ...]] = []
    ctx = click.Context(cli)
    for name in cli.list_commands(ctx):
        cmd = cli.get_command(ctx, name)
        paths.append((name,))
        if isinstance(cmd, click.Group):
            paths += [(name, sub) for sub in cmd.list_commands(click.Context(cmd))]
    return paths


def github_post_env(tmp: Path, api_url: str) -> dict[str, str]:
    event = tmp / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 7, "head": {"sha": "a" * 40, "repo": {"full_name": "o/r"}},
                                                  "base": {"sha": "b" * 40, "repo": {"full_name": "o/r"}}}}))
    return {"GITHUB_ACTIONS": "true", "GITHUB_API_URL": api_url, "GITHUB_REPOSITORY": "o/r",
            "GITHUB_EVENT_NAME": "pull_request", "GITHUB_EVENT_PATH": str(event), "GITHUB_SHA": "a" * 40,
            "GITHUB_STEP_SUMMARY": str(tmp / "summary.md"), "GITHUB_OUTPUT": str(tmp / "output")}


@pytest.mark.parametrize("scenario", [plain_canary(), pem_key()], ids=["canary", "pem-key"])
def test_no_exit_path_prints_or_writes_a_secret(scenario: Scenario, tmp_path: Path) -> None:
    root = project(tmp_path / "proj", "env && " + sys.executable + " train.py")
    run = Harness(scenario, root)

    # the CLI itself, and every subcommand with bad input
    assert run("--help").code == 0
    assert run("--version").code == 0
    for path in every_command():
        assert run(*path, "--help").code == 0
        assert run(*path, "--no-such-option").code == 2
    run("gate", "--run", "no-such-run.json")
    run("deploy", "status")
    run("registry", "show", "toy")
    run("metrics", "diff", "no-such-rev")

    # training: the command prints its whole environment; the scrubbed environment holds no secret
    trained = run("train")
    logs = list(root.glob(".lepton/runs/*/train.log"))
    assert logs, trained
    log = logs[0].read_text()
    assert "PATH=" in log and "LEPTON_CI_RUN_ID=" in log, log[-2000:]  # `env` did print the environment
    assert not [name for name in SECRET_VARS if f"{name}=" in log], "a secret variable reached the training command"

    run("gate")
    run("tag")
    run("report")
    run("report", "-o", "report.md")
    run("registry", "list")
    run("keys", "public")
    run("run", "--steps", "train,gate,report")

    # report --post against an API that is not there (connection refused), and malformed API URLs / tokens
    post_env = github_post_env(tmp_path, "http://127.0.0.1:9")
    refused = run("report", "--post", env=post_env)
    assert refused.code == 2 and "Traceback" not in refused.err, refused
    for bad in ({"GITHUB_API_URL": "htp://x"}, {"GITHUB_API_URL": "http://[::1"},
                {"LEPTON_CI_GITHUB_TOKEN": CANARY + "\nX-Evil: 1"}):
        r = run("report", "--post", env={**post_env, **bad})
        assert r.code == 2 and "internal error" not in r.err, r

    # a training command that fails after printing its environment
    failing = project(tmp_path / "failing", "env; exit 3")
    assert run("train", cwd=failing).code == 1
    failing_log = next(failing.glob(".lepton/runs/*/train.log")).read_text()
    assert "PATH=" in failing_log

    # no config, and a broken one
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (("train",), ("gate",), ("report",), ("run",), ("-c", "missing.yml", "tag")):
        assert run(*args, cwd=empty).code == 2
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "lepton.yml").write_text("model: [unclosed\n  name: toy\n")
    for args in (("train",), ("config", "validate"), ("run",)):
        assert run(*args, cwd=broken).code == 2

    assert all(o.code != 70 for o in run.outcomes), [o for o in run.outcomes if o.code == 70]
    scanned = assert_no_file_holds_a_secret(scenario, root, failing, empty, broken, tmp_path)
    assert {p.name for p in scanned} >= {"train.log", "run.json", "report.md"}, scanned


@pytest.mark.parametrize("scenario", [plain_canary(), pem_key()], ids=["canary", "pem-key"])
@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_escaping_exceptions_are_masked(scenario: Scenario, debug: bool, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """In-process: an error that carries a secret in its message (as a library's exception might) is
    printed masked, on the internal-error path (exit 70), the LeptonError path and the OSError path."""
    import lepton_ci.steps.report as report_step
    from lepton_ci.cli import main
    from lepton_ci.errors import UserError

    project(tmp_path / "proj", "echo trained")
    monkeypatch.chdir(tmp_path / "proj")
    for name in [k for k in os.environ if k.startswith(("GITHUB_", "GITLAB_", "CI_", "LEPTON_CI_"))]:
        monkeypatch.delenv(name)
    for name, value in scenario.secrets.items():
        monkeypatch.setenv(name, value)
    key_line = PEM_LINES[1] if scenario.secrets["LEPTON_CI_SIGNING_KEY"] == PRIVATE_PEM else CANARY
    args = ["--debug"] if debug else []

    def boom(exc: BaseException) -> Any:
        def raiser(*a: Any, **kw: Any) -> Any:
            raise exc
        return raiser

    cases: list[tuple[BaseException, int, str]] = [
        (RuntimeError(f"token={os.environ['GITHUB_TOKEN']} key line {key_line}"), 70, "internal error: RuntimeError"),
        (KeyError(os.environ["LEPTON_CI_SIGNING_KEY"]), 70, "internal error: KeyError"),
        (UserError(f"bad registry password {os.environ['LEPTON_REGISTRY_PASSWORD']}"), 2, "error: bad registry password"),
        (FileNotFoundError(2, "No such file or directory", f"/tmp/{CANARY}/x"), 2, "No such file or directory"),
    ]
    for exc, code, needle in cases:
        monkeypatch.setattr(report_step, "report", boom(exc))
        assert main([*args, "report"]) == code
        out, err = capsys.readouterr()
        assert needle in err, err
        assert ("Traceback" in err) == debug, err
        assert_clean(scenario, f"in-process {type(exc).__name__}", out, err)
        assert key_line not in err and CANARY not in err


def test_report_md_is_private(tmp_path: Path) -> None:
    """report.md is written 0600: it is assembled from records a training run influenced."""
    from lepton_ci.steps.report import write_report

    target = tmp_path / "out" / "report.md"
    target.parent.mkdir()
    target.write_text("old")
    target.chmod(0o644)
    write_report(target, "# report\n")
    assert target.stat().st_mode & 0o777 == 0o600 and target.read_text() == "# report\n"


def test_pipeline_report_md_is_private(tmp_path: Path) -> None:
    root = project(tmp_path / "proj", sys.executable + " train.py")
    proc = subprocess.run([sys.executable, "-m", "lepton_ci.cli", "run", "--steps", "train,gate,report"], cwd=root,
                          env=clean_env(), capture_output=True, text=True, timeout=180)
    report_md = root / ".lepton" / "report.md"
    assert report_md.is_file(), proc.stderr
    assert report_md.stat().st_mode & 0o777 == 0o600
