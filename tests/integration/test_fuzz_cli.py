"""Fuzz the CLI: mutated lepton.yml, metrics files and records must never end in a traceback.

The issue "Trust and seams" asks: every error path is one line, every input is bounded. This test starts
from VALID inputs made by really running the pipeline once on a tiny project (train, gate, tag, promote,
train, gate, tag, train, gate), then mutates one file per case, structure-aware (tests/support/fuzz.py),
and runs one command in process through `lepton_ci.cli.main`. Each case must:

* exit 0, 1 or 2 (70 is "internal error": an exception nobody mapped to a message);
* print no traceback and no "internal error";
* on a non-zero exit, print exactly one line on stderr (warnings aside), starting with "lepton-ci";
* print no stderr line longer than 2,000 characters (a bounded input gives a bounded message);
* finish in under 5 s, and not grow the process's peak RSS by more than 500 MB.

The exponential YAML alias bombs and 100,000-level nesting run in a subprocess limited to 1 GiB of
address space instead (a few cases only).

Failures are collected and grouped by (command, exit code, first stderr line with paths and digits
normalised); the assertion lists up to 30 groups with one reproducer each. Deterministic: the seed is
LEPTON_FUZZ_SEED (default below), the number of cases LEPTON_FUZZ_N (default 2,200 across all commands);
both are printed in every failure message.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from lepton_ci.cli import main
from tests.e2e.helpers import CONFIG, TRAIN_SCRIPT, make_project
from tests.support import fuzz
from tests.support.keys import PRIVATE_PEM

SEED = int(os.environ.get("LEPTON_FUZZ_SEED", "20261202"))
TOTAL = int(os.environ.get("LEPTON_FUZZ_N", "2200"))
CASE_SECONDS = 5.0
RSS_GROWTH_KB = 500 * 1024
MAX_LINE = 2000
MAX_GROUPS = 30
STATS = os.environ.get("LEPTON_FUZZ_STATS", "")

REG = ".lepton/registry"
MODEL_DIR = f"{REG}/models/toy"
V1, V2 = f"{MODEL_DIR}/versions/1.json", f"{MODEL_DIR}/versions/2.json"
HISTORY, MARKER = f"{MODEL_DIR}/history.jsonl", f"{REG}/lepton-registry.json"
RUN, GATE, VERSION, DEPLOYMENT = ".lepton/run.json", ".lepton/gate.json", ".lepton/version.json", ".lepton/deployment.json"

FUZZ_COMMAND = "cp .fuzz/metrics.json .fuzz/metrics.yaml .fuzz/metrics.toml . && touch model.bin"
METRICS_YAML = "yaml:\n  f1: 0.81\n  per_class:\n    - 0.7\n    - 0.9\n  name: not-a-metric\nyaml_epochs: 3\n"
METRICS_TOML = '[toml]\nauc = 0.77\nsteps = 100\nlabel = "text is ignored"\n\n[toml.nested]\nrecall = 0.6\n'


def fuzz_config(command: str) -> str:
    """CONFIG from tests/e2e/helpers.py, with three metrics files (JSON, YAML 1.2, TOML)."""
    cfg = textwrap.dedent(CONFIG).format(python=sys.executable)
    cfg = re.sub(r"command: .*", lambda _: f"command: {command}", cfg)
    return cfg.replace("metrics: [metrics.json]", "metrics: [metrics.json, metrics.yaml, metrics.toml]")


# --- running one command in process ---------------------------------------------------------------------


@dataclass
class Outcome:
    code: int | None
    out: str
    err: str
    seconds: float
    escaped: str = ""


def run_cli(args: list[str]) -> Outcome:
    """`lepton-ci ARGS` in this process; stdout/stderr have a `.buffer` like real ones (train streams bytes)."""
    out_b, err_b = io.BytesIO(), io.BytesIO()
    out = io.TextIOWrapper(out_b, encoding="utf-8", errors="backslashreplace", write_through=True)
    err = io.TextIOWrapper(err_b, encoding="utf-8", errors="backslashreplace", write_through=True)
    escaped = ""
    start = time.perf_counter()
    code: int | None = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except BaseException as exc:  # noqa: BLE001 - anything escaping main is a finding
            escaped = f"{type(exc).__name__}: {str(exc)[:300]}"
    seconds = time.perf_counter() - start
    out.flush()
    err.flush()
    return Outcome(code, out_b.getvalue().decode("utf-8", "replace"), err_b.getvalue().decode("utf-8", "replace"),
                   seconds, escaped)


def problems_of(o: Outcome) -> list[str]:
    """What is wrong with one outcome (empty when the case is fine)."""
    found = []
    if o.escaped:
        found.append(f"exception escaped main(): {o.escaped}")
    if o.code not in (0, 1, 2):
        found.append(f"exit code {o.code}")
    if "Traceback" in o.err or "Exception in thread" in o.err:
        found.append("traceback on stderr")
    if "internal error" in o.err:
        found.append("internal error")
    lines = [line for line in o.err.splitlines() if line.strip()]
    if o.code not in (0, None):
        errors = [line for line in lines if not line.startswith("lepton-ci: warning")]
        if len(errors) != 1:
            found.append(f"{len(errors)} non-warning stderr lines on exit {o.code} (want exactly 1)")
        elif not errors[0].startswith("lepton-ci"):
            found.append("error line does not start with 'lepton-ci'")
    if any(len(line) > MAX_LINE for line in lines):
        found.append(f"stderr line of {max(len(line) for line in lines)} chars (unbounded message)")
    if o.seconds > CASE_SECONDS:
        found.append(f"took {o.seconds:.1f}s (limit {CASE_SECONDS:g}s)")
    return found


# --- grouping failures -----------------------------------------------------------------------------------


@dataclass
class Failure:
    command: str
    args: str
    file: str
    mutation: str
    content: str
    outcome: Outcome
    problems: list[str]


@dataclass
class Findings:
    label: str
    cases: Counter = field(default_factory=Counter)
    groups: dict[tuple[str, Any, str], list[Failure]] = field(default_factory=dict)
    answers: Counter = field(default_factory=Counter)

    def add(self, f: Failure, root: Path) -> None:
        self.groups.setdefault(signature(f, root), []).append(f)

    def report(self) -> str:
        total = sum(self.cases.values())
        failed = sum(len(v) for v in self.groups.values())
        head = (f"{self.label}: {failed} of {total} fuzz cases failed, {len(self.groups)} distinct signature(s) "
                f"(LEPTON_FUZZ_SEED={SEED} LEPTON_FUZZ_N={TOTAL}; cases per command: {dict(self.cases)})")
        parts = [head]
        ordered = sorted(self.groups.items(), key=lambda kv: (-len(kv[1]), kv[0][0], str(kv[0][1]), kv[0][2]))
        for n, ((command, code, sig), fails) in enumerate(ordered[:MAX_GROUPS], 1):
            ex = min(fails, key=lambda f: len(f.content))  # the smallest reproducer
            files = Counter(f.file for f in fails)
            parts.append(
                f"\n[{n}] {command!r} exit {code} x{len(fails)}: {sig}\n"
                f"    problems: {'; '.join(ex.problems)}\n"
                f"    files: {dict(files.most_common(4))}\n"
                f"    reproducer: `lepton-ci {ex.args}` with {ex.file}: {ex.mutation}\n"
                f"    content: {ex.content[:300]}\n"
                f"    stderr: {fuzz.excerpt(ex.outcome.err.encode(), 400)}")
        if len(ordered) > MAX_GROUPS:
            parts.append(f"\n... and {len(ordered) - MAX_GROUPS} more signature(s)")
        return "\n".join(parts)


def signature(f: Failure, root: Path) -> tuple[str, Any, str]:
    lines = [line for line in f.outcome.err.splitlines() if line.strip() and not line.startswith("lepton-ci: warning")]
    if f.outcome.escaped:
        first = "escaped: " + f.outcome.escaped
    elif "Traceback" in f.outcome.err:
        last = [line for line in lines if re.match(r"^\w+(\.\w+)*(Error|Exception)\b", line)]
        first = "traceback: " + (last[-1] if last else lines[-1] if lines else "")
    elif lines:
        first = lines[0]
    else:
        first = "(no stderr)"
    kind = [p.split(":")[0].split(" (")[0] for p in f.problems]
    kinds = sorted({re.sub(r"\d+(\.\d+)?", "N", k) for k in kind})
    return f.command, f.outcome.code, f"{normalise(first, root)[:220]}  <{'; '.join(kinds)}>"


def normalise(line: str, root: Path) -> str:
    """A stderr line with the project path, temporary paths, digests, long quoted values and digits generalised."""
    text = line.replace(str(root), "<proj>").replace(str(root.resolve()), "<proj>")
    text = re.sub(r"/tmp/\S+", "<tmp>", text)
    text = re.sub(r"[0-9a-f]{12,}", "<hex>", text)
    text = re.sub(r"'[^' ]{24,}'", "'…'", text)
    text = re.sub(r"\d+", "N", text)
    return re.sub(r"(x{8,}|\\n)", "…", text)


# --- the valid template project ---------------------------------------------------------------------------


@contextlib.contextmanager
def environment(root: Path, gitconfig: Path) -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("LEPTON_CI_SIGNING_KEY", PRIVATE_PEM)
        mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
        mp.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
        mp.setenv("GIT_AUTHOR_NAME", "Fuzz")
        mp.setenv("GIT_AUTHOR_EMAIL", "fuzz@lepton-ci.invalid")
        mp.setenv("GIT_COMMITTER_NAME", "Fuzz")
        mp.setenv("GIT_COMMITTER_EMAIL", "fuzz@lepton-ci.invalid")
        for name in ("LEPTON_CI_CONFIG", "LEPTON_CI_REGISTRY", "LEPTON_CI_DEBUG", "LEPTON_CI_PUBLIC_KEY",
                     "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT", "GITHUB_ENV", "GITLAB_CI",
                     "CI_SERVER_URL", "CI_JOB_TOKEN", "GITHUB_TOKEN"):
            mp.delenv(name, raising=False)
        yield mp


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def build_template(root: Path, gitconfig: Path) -> dict[str, Any]:
    real_command = f"{sys.executable} train.py && cp .fuzz/metrics.yaml .fuzz/metrics.toml ."
    make_project(root, config=fuzz_config(real_command).replace("{", "{{").replace("}", "}}"), script=TRAIN_SCRIPT)
    (root / ".fuzz").mkdir()
    (root / ".fuzz/metrics.yaml").write_text(METRICS_YAML)
    (root / ".fuzz/metrics.toml").write_text(METRICS_TOML)
    (root / ".gitignore").write_text(".lepton/\n.fuzz/\n")
    gitconfig.write_text("")
    with environment(root, gitconfig):
        git(root, "init", "-q", "-b", "main")
        git(root, "config", "commit.gpgsign", "false")
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "init")
        steps = [["train", "-p", "acc=0.9"], ["gate"], ["tag"], ["registry", "promote", "1", "production"],
                 ["train", "-p", "acc=0.92"], ["gate"], ["tag"], ["train", "-p", "acc=0.93"], ["gate"]]
        for args in steps:
            o = run_cli(args)
            assert o.code == 0, (args, o)
        shutil.copy(root / "metrics.json", root / ".fuzz/metrics.json")
        shutil.copy(root / RUN, root / ".fuzz/base-run.json")
        (root / "lepton.yml").write_text(fuzz_config(FUZZ_COMMAND))
        git(root, "add", "-A")
        git(root, "add", "-f", "metrics.json", "metrics.yaml", "metrics.toml")
        git(root, "commit", "-q", "-m", "fuzz template")
        version = json.loads((root / VERSION).read_text())
        deployment = {
            "schema_version": 2, "kind": "deployment", "target": "local", "model": "toy", "version": version["version"],
            "digest": version["digest"], "endpoint": "http://127.0.0.1:9", "status": "healthy",
            "health": [{"check": "live", "passed": True, "ms": 3}], "previous": None, "image": "",
            "state": {"pid": 4194303, "start_ticks": 12345, "port_file": str(root / ".lepton/nope/port"),
                      "log": str(root / ".lepton/nope/server.log"), "command": None},
            "created": "2026-01-01T00:00:00.000Z",
        }
        (root / DEPLOYMENT).write_text(json.dumps(deployment, indent=2) + "\n")
        head = git(root, "rev-parse", "HEAD").strip()
        # The valid baseline: what each fuzzed command answers before any mutation.
        baseline = {}
        snap = fuzz.Snapshot(root)
        for command, plan in PLANS.items():
            for args in plan.args:
                o = run_cli(args)
                baseline[" ".join(args)] = o.code
                assert not problems_of(o), (args, o)
                snap.restore()
    return {"root": root, "head": head, "baseline": baseline}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("fuzz-template")
    return build_template(base / "proj", base / "gitconfig")


# --- what each command is fuzzed with -----------------------------------------------------------------------


@dataclass
class Plan:
    weight: int
    files: list[tuple[str, float]]
    args: list[list[str]]
    special: Callable[[random.Random, str, list[str]], list[str]] | None = None


def _gate_args(rng: random.Random, rel: str, args: list[str]) -> list[str]:
    if rel == ".fuzz/base-run.json":
        return ["gate", "--baseline", ".fuzz/base-run.json"]
    if rel == "git:HEAD":
        return ["gate", "--baseline", "git:HEAD"]
    return rng.choice([["gate"], ["gate"], ["gate", "--baseline", "production"], ["gate", "--baseline", "none"],
                       ["gate", "--baseline", "candidate"], ["gate", "--baseline", "v1"]])


REGISTRY_FILES = [(V1, 0.25), (V2, 0.25), (HISTORY, 0.25), (MARKER, 0.08), ("fs", 0.12), ("lepton.yml", 0.05)]
PLANS: dict[str, Plan] = {
    "config validate": Plan(300, [("lepton.yml", 1.0)], [["config", "validate"]]),
    "train": Plan(280, [("lepton.yml", 0.25), (".fuzz/metrics.json", 0.35), (".fuzz/metrics.yaml", 0.2),
                        (".fuzz/metrics.toml", 0.2)], [["train"]]),
    "gate": Plan(380, [(RUN, 0.45), (V1, 0.1), (HISTORY, 0.08), (MARKER, 0.03), ("lepton.yml", 0.1),
                       (".fuzz/base-run.json", 0.12), ("git:HEAD", 0.12)], [["gate"]], _gate_args),
    "metrics diff": Plan(300, [("metrics.json", 0.3), ("metrics.yaml", 0.2), ("metrics.toml", 0.15),
                               ("lepton.yml", 0.15), ("git:HEAD", 0.2)], [["metrics", "diff", "HEAD"]],
                         lambda rng, rel, args: ["metrics", "diff", "HEAD", *rng.choice([[], ["--json"], ["--md"]])]),
    "tag": Plan(260, [(RUN, 0.3), (GATE, 0.3), (V1, 0.07), (V2, 0.08), (HISTORY, 0.1), (MARKER, 0.05),
                      ("lepton.yml", 0.05), ("fs", 0.05)], [["tag"]]),
    "registry check": Plan(200, REGISTRY_FILES, [["registry", "check"]]),
    "registry list": Plan(120, REGISTRY_FILES, [["registry", "list"]],
                          lambda rng, rel, args: ["registry", "list", *rng.choice([[], ["--json"]])]),
    "registry show": Plan(120, REGISTRY_FILES, [["registry", "show", "1"]],
                          lambda rng, rel, args: ["registry", "show",
                                                  rng.choice(["1", "v2", "production", "candidate", "latest"]),
                                                  *rng.choice([[], ["--json"]])]),
    "deploy status": Plan(80, [(DEPLOYMENT, 0.85), ("lepton.yml", 0.15)], [["deploy", "status"]]),
    "report": Plan(160, [(RUN, 0.3), (GATE, 0.3), (VERSION, 0.15), (DEPLOYMENT, 0.15), ("lepton.yml", 0.1)],
                   [["report", "--no-summary"]]),
}


def fs_mutation(rng: random.Random, root: Path) -> str:
    """A change to the registry's layout rather than to one file's bytes."""
    vdir = root / MODEL_DIR / "versions"
    op = rng.choice(["stray_manifest", "zero_manifest", "leading_zero", "dir_manifest", "symlink_out", "history_dir",
                     "blob_corrupt", "blob_missing", "blob_dir", "manifest_copy", "marker_missing", "models_file",
                     "foreign_entry", "v_huge_number"])
    if op == "stray_manifest":
        (vdir / "x.json").write_text("{}")
    elif op == "zero_manifest":
        shutil.copy(vdir / "1.json", vdir / "0.json")
    elif op == "leading_zero":
        shutil.copy(vdir / "1.json", vdir / "01.json")
    elif op == "dir_manifest":
        (vdir / "3.json").mkdir()
    elif op == "symlink_out":
        (vdir / "3.json").symlink_to("/etc/passwd")
    elif op == "history_dir":
        (root / HISTORY).unlink()
        (root / HISTORY).mkdir()
    elif op == "blob_corrupt":
        blob = sorted((root / REG / "blobs/sha256").iterdir())[0]
        blob.write_bytes(b"tampered")
    elif op == "blob_missing":
        sorted((root / REG / "blobs/sha256").iterdir())[0].unlink()
    elif op == "blob_dir":
        blob = sorted((root / REG / "blobs/sha256").iterdir())[0]
        blob.unlink()
        blob.mkdir()
    elif op == "manifest_copy":
        shutil.copy(vdir / "1.json", vdir / "3.json")
    elif op == "marker_missing":
        (root / MARKER).unlink()
    elif op == "models_file":
        (root / REG / "models/other").write_text("x")
    elif op == "foreign_entry":
        (root / REG / "README").write_text("x")
    elif op == "v_huge_number":
        shutil.copy(vdir / "1.json", vdir / ("9" * 19 + ".json"))
    return op


def pick(rng: random.Random, weighted: list[tuple[str, float]]) -> str:
    x = rng.random() * sum(w for _, w in weighted)
    for name, w in weighted:
        x -= w
        if x <= 0:
            return name
    return weighted[-1][0]


def cases_for(command: str) -> int:
    total_weight = sum(p.weight for p in PLANS.values())
    return max(1, round(TOTAL * PLANS[command].weight / total_weight))


def fuzz_command(command: str, template: dict[str, Any], tmp_path: Path) -> Findings:
    root = tmp_path / "proj"
    shutil.copytree(template["root"], root, symlinks=True)
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text("")
    plan = PLANS[command]
    findings = Findings(command)
    rng = random.Random(f"{SEED}:{command}")
    with environment(root, gitconfig):
        snap = fuzz.Snapshot(root)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for i in range(cases_for(command)):
            rel = pick(rng, plan.files)
            args = plan.special(rng, rel, plan.args[0]) if plan.special else list(plan.args[0])
            committed = False
            if rel == "fs":
                mutation, content = fs_mutation(rng, root), "(layout change)"
            elif rel == "git:HEAD":
                target = pick(rng, [("metrics.json", 0.4), ("metrics.yaml", 0.25), ("metrics.toml", 0.2),
                                    ("lepton.yml", 0.15 if command == "metrics diff" else 0.0)])
                data = snap.files[target][2]
                new, mutation = fuzz.mutate_file(rng, target, data)
                fuzz.write_mutation(root / target, new)
                git(root, "add", "-f", target)
                git(root, "commit", "-q", "--allow-empty", "-m", f"fuzz {i}")
                fuzz.write_mutation(root / target, data)
                (root / target).touch()
                committed = True
                rel, content = f"{target} at HEAD", fuzz.describe(new)
            else:
                data = snap.files[rel][2]
                new, mutation = fuzz.mutate_file(rng, rel, data)
                fuzz.write_mutation(root / rel, new)
                content = fuzz.describe(new)
            outcome = run_cli(args)
            found = problems_of(outcome)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            if rss - rss0 > RSS_GROWTH_KB:
                found.append(f"peak RSS grew by {(rss - rss0) // 1024} MB")
                rss0 = rss
            findings.cases[" ".join(args[:3]) if command != "registry show" else "registry show"] += 1
            if found:
                findings.add(Failure(command, " ".join(args), rel, f"{mutation} [case {i}]", content, outcome, found), root)
            if STATS:
                first = (outcome.err.strip().splitlines() or ["(ok)"])[-1]
                findings.answers[(outcome.code, normalise(first, root)[:110])] += 1
            if committed:
                git(root, "reset", "-q", "--hard", template["head"])
            snap.restore()
    return findings


@pytest.mark.parametrize("command", list(PLANS))
def test_fuzz_cli(command: str, template: dict[str, Any], tmp_path: Path) -> None:
    findings = fuzz_command(command, template, tmp_path)
    if STATS:  # LEPTON_FUZZ_STATS=1 pytest -s: what the cases answered, to see how deep the mutations reach
        print(f"\n{command}: {len(findings.answers)} distinct answers")
        for (code, line), n in findings.answers.most_common(int(STATS) if STATS.isdigit() and int(STATS) > 1 else 15):
            print(f"  {n:4d}  exit {code}  {line}")
    assert sum(findings.cases.values()) == cases_for(command)
    if findings.groups:
        pytest.fail(findings.report(), pytrace=False)


def test_fuzz_volume_is_at_least_2000_cases() -> None:
    """The issue asks for at least 2,000 mutated inputs across the commands (LEPTON_FUZZ_N may raise it)."""
    if "LEPTON_FUZZ_N" not in os.environ:
        assert sum(cases_for(c) for c in PLANS) >= 2000


# --- bombs and extreme nesting, in a memory-limited subprocess --------------------------------------------

BILLION_LAUGHS = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8))
)
# Expands to about 900,000 nodes: just under yamlsafe.MAX_NODES, so it is accepted and then built.
NEAR_LIMIT = "a: &a [" + ",".join(["1"] * 95) + "]\n" + "b: &b [" + ",".join(["*a"] * 96) + "]\n" \
             + "c: [" + ",".join(["*b"] * 96) + "]\n"

BOMBS: list[tuple[str, str, bytes, list[str]]] = [
    ("billion laughs in lepton.yml", "lepton.yml", BILLION_LAUGHS.encode(), ["config", "validate"]),
    ("billion laughs in metrics.yaml", "metrics.yaml", BILLION_LAUGHS.encode(), ["metrics", "diff", "HEAD"]),
    ("near-limit alias expansion in lepton.yml", "lepton.yml", NEAR_LIMIT.encode(), ["config", "validate"]),
    ("near-limit alias expansion in metrics.yaml (train)", ".fuzz/metrics.yaml", NEAR_LIMIT.encode(), ["train"]),
    ("100,000-deep flow sequence in lepton.yml", "lepton.yml", b"model: " + b"[" * 100_000 + b"]" * 100_000, ["config", "validate"]),
    ("100,000-deep JSON in run.json", RUN, b"[" * 100_000 + b"]" * 100_000, ["gate"]),
    ("100,000-deep TOML array in metrics.toml", "metrics.toml", b"a = " + b"[" * 100_000 + b"]" * 100_000,
     ["metrics", "diff", "HEAD"]),
]

_BOMB_RUNNER = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from lepton_ci.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_fuzz_bombs_in_a_memory_limited_subprocess(template: dict[str, Any], tmp_path: Path) -> None:
    root = tmp_path / "proj"
    shutil.copytree(template["root"], root, symlinks=True)
    snap = fuzz.Snapshot(root)
    findings = Findings("bombs")
    repo_root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "GITLAB_", "LEPTON_CI_"))}
    env.update(LEPTON_CI_SIGNING_KEY=PRIVATE_PEM, PYTHONPATH=str(repo_root), GIT_CONFIG_NOSYSTEM="1")
    for i, (name, rel, content, args) in enumerate(BOMBS):
        fuzz.write_mutation(root / rel, content)
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-c", _BOMB_RUNNER, *args], cwd=root, env=env,
                                  capture_output=True, text=True, timeout=30)
            outcome = Outcome(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start)
        except subprocess.TimeoutExpired:
            outcome = Outcome(None, "", "", time.perf_counter() - start, escaped="killed after 30 s")
        found = problems_of(outcome)
        if outcome.code is not None and outcome.code < 0:
            found.append(f"killed by signal {-outcome.code}")
        findings.cases[" ".join(args)] += 1
        if STATS:
            last = (outcome.err.strip().splitlines() or ["(no stderr)"])[-1]
            print(f"\n  bomb {name}: exit {outcome.code} in {outcome.seconds:.2f}s: {normalise(last, root)[:140]}")
        if found:
            findings.add(Failure("bombs", " ".join(args), rel, f"{name} [bomb {i}]", fuzz.describe(content), outcome, found),
                         root)
        snap.restore()
    if findings.groups:
        pytest.fail(findings.report(), pytrace=False)
