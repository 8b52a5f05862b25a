"""The GitHub Actions surface passes the real linters with zero findings, and keeps its own rules.

- actionlint on every workflow (the self-test workflow reaches each local action.yml through `uses: $/...`,
  so actionlint also checks the inputs each action is given), with shellcheck on their `run:` scripts;
- zizmor (`--offline --persona pedantic`) on every workflow and action.yml;
- check-jsonschema with SchemaStore's `github-actions` schema on every action.yml and `github-workflows`
  on every workflow;
- shellcheck on every `run:` script of every action;
- the rules of DESIGN.md "CI surfaces" that no linter knows: inputs reach scripts only through `env:`
  (no `${{ }}` in `run:`), every input and output documented, every env var a script reads is set, the
  install step identical in every action (and putting the venv on the job's PATH), settings inputs that
  never hide a job's LEPTON_CI_* (docs/index.md's precedence), and the docs show exactly the workflows the
  e2e test runs, under distinct names, lint-clean with the actionlint config the docs ship; docs/build.md's
  copy-paste workflows (GHCR, Kubernetes) pass actionlint and zizmor too.

The tools come from scripts/deps/20-github-actions.sh; without them the linter tests skip, except under
scripts/test or CI=true, where a missing tool fails.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from tests.support.tools import github_actions_tool

ROOT = Path(__file__).resolve().parents[2]
ACTIONS = [ROOT / "action.yml", *sorted((ROOT / "actions").glob("*/action.yml"))]
WORKFLOWS = [
    *sorted((ROOT / ".github" / "workflows").glob("lepton*.yml")),
    *sorted((ROOT / "tests" / "e2e" / "workflows").glob("*.yml")),
    *sorted((ROOT / "tests" / "e2e" / "workflows" / "checks").glob("*.yml")),
]
DOCS = ROOT / "docs" / "github-actions.md"
STEPS = ["setup", "train", "gate", "tag", "build", "deploy", "report", "sweep"]
# `sweep` has two modes: its own action only
UMBRELLA_STEPS = ["setup", "train", "gate", "tag", "build", "deploy", "report"]

# The actionlint config the docs ship: it declares the self-hosted runner label `gpu` of the documented
# workflows (actionlint knows only GitHub's hosted labels).
ACTIONLINT_CONFIG = ROOT / "docs" / "examples" / "github" / "actionlint.yaml"
# The settings an action takes as inputs and lepton-ci reads as LEPTON_CI_<NAME>.
SETTINGS = {"config": "CONFIG", "registry": "REGISTRY", "signing-key": "SIGNING_KEY", "public-key": "PUBLIC_KEY"}
# lepton's own actions are referenced by their moving major tag (`lepton/ci/actions/train@v1`): that is
# the contract scripts/release keeps. Everything else stays hash-pinned.
ZIZMOR_CONFIG = """\
rules:
  unpinned-uses:
    config:
      policies:
        "lepton/*": ref-pin
        "*": hash-pin
"""
EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.S)


tool = github_actions_tool


def run(*cmd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


def rel(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def doc_workflows() -> list[tuple[str, str]]:
    """(name, yaml) for each documented workflow marked `<!-- workflow: tests/e2e/workflows/NAME -->`."""
    return re.findall(r"<!-- workflow: (\S+) -->\n```yaml\n(.*?)```", DOCS.read_text(), flags=re.S)


# ---- the real linters ----------------------------------------------------------------------------------


def actionlint_findings(*paths: str, config: Path | None, cwd: Path = ROOT) -> tuple[list[dict], str]:
    actionlint = tool("actionlint")
    shellcheck = tool("shellcheck")
    options = ["-config-file", str(config)] if config else []
    result = subprocess.run(
        [actionlint, *options, "-shellcheck", shellcheck, "-format", "{{json .}}", *paths],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings or result.returncode == 0, result.stderr
    return findings, "\n".join(
        f"{f['filepath']}:{f['line']}:{f['column']}: {f['message']} [{f['kind']}]" for f in findings
    )


def test_actionlint_workflows() -> None:
    findings, text = actionlint_findings(*rel(WORKFLOWS), config=ACTIONLINT_CONFIG)
    assert findings == [], text


def test_actionlint_documented_workflows_with_the_shipped_config(tmp_path: Path) -> None:
    """The workflows as printed in docs/github-actions.md, saved where a user saves them, pass actionlint
    with docs/examples/github/actionlint.yaml as the docs say, and only with it (the `gpu` label)."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=60)  # actionlint finds the repository
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    for path, text in doc_workflows():
        (workflows / Path(path).name).write_text(text)
    (tmp_path / ".github" / "actionlint.yaml").write_bytes(ACTIONLINT_CONFIG.read_bytes())
    findings, text = actionlint_findings(config=None, cwd=tmp_path)  # finds .github/actionlint.yaml itself
    assert findings == [], text
    (tmp_path / ".github" / "actionlint.yaml").unlink()
    findings, text = actionlint_findings(config=None, cwd=tmp_path)
    assert findings and all(f["kind"] == "runner-label" and '"gpu"' in f["message"] for f in findings), text


def build_doc_workflows() -> list[tuple[str, str]]:
    """(name, yaml) for each copy-paste workflow of docs/build.md, marked `<!-- build-workflow: NAME -->`."""
    text = (ROOT / "docs" / "build.md").read_text()
    return re.findall(r"<!-- build-workflow: (\S+) -->\n```yaml\n(.*?)```", text, flags=re.S)


def test_build_doc_workflows_pass_actionlint_and_zizmor(tmp_path: Path) -> None:
    """docs/build.md's GHCR and Kubernetes workflows, saved where a user saves them, use the build action
    and pass actionlint (with ShellCheck) and zizmor (pedantic, the project's pinning policy)."""
    found = build_doc_workflows()
    assert sorted(name for name, _ in found) == ["deploy-kubernetes.yml", "model-image.yml"], found
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=60)
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    for name, text in found:
        data = yaml.safe_load(text)
        steps = [s for job in data["jobs"].values() for s in job["steps"]]
        assert any(s.get("uses", "").startswith("lepton/ci/actions/build@") for s in steps), name
        assert "packages: write" in text and "secrets.GITHUB_TOKEN" in text, name
        (workflows / name).write_text(text)
    assert "secrets.KUBECONFIG" in dict(found)["deploy-kubernetes.yml"]
    findings, text = actionlint_findings(config=None, cwd=tmp_path)
    assert findings == [], text
    config = tmp_path / "zizmor.yml"
    config.write_text(ZIZMOR_CONFIG)
    result = run(tool("zizmor"), "--offline", "--persona", "pedantic", "--config", str(config), str(workflows))
    assert result.returncode == 0, result.stdout + result.stderr


def test_documented_workflows_have_distinct_names() -> None:
    """The sticky comment is one per (model, workflow name): two documented workflows under one name would
    overwrite each other's comment."""
    names = [yaml.safe_load(text)["name"] for _, text in doc_workflows()]
    assert len(names) >= 2 and len(set(names)) == len(names), names
    # and so do the workflows a user would run next to them (the self-test, the e2e checks)
    every = [load(p)["name"] for p in WORKFLOWS]
    assert len(set(every)) == len(every), every


def test_zizmor_pedantic_workflows_and_actions(tmp_path: Path) -> None:
    zizmor = tool("zizmor")
    config = tmp_path / "zizmor.yml"
    config.write_text(ZIZMOR_CONFIG)
    result = run(
        zizmor,
        "--offline",
        "--persona",
        "pedantic",
        "--config",
        str(config),
        "--format",
        "json",
        *rel(WORKFLOWS),
        *rel(ACTIONS),
    )
    findings = [f for f in json.loads(result.stdout or "[]") if not f.get("ignored")]
    if findings or result.returncode != 0:
        plain = run(
            zizmor, "--offline", "--persona", "pedantic", "--config", str(config), *rel(WORKFLOWS), *rel(ACTIONS)
        )
        pytest.fail(f"zizmor: {len(findings)} finding(s)\n{plain.stdout}{plain.stderr}")


@pytest.mark.parametrize(
    "schema,paths",
    [("vendor.github-actions", ACTIONS), ("vendor.github-workflows", WORKFLOWS)],
    ids=["actions", "workflows"],
)
def test_check_jsonschema(schema: str, paths: list[Path]) -> None:
    check = tool("check-jsonschema")
    result = run(check, "--builtin-schema", schema, *rel(paths))
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_action_scripts(tmp_path: Path) -> None:
    shellcheck = tool("shellcheck")
    scripts = []
    for action in ACTIONS:
        for step in load(action)["runs"]["steps"]:
            if "run" in step:
                script = tmp_path / f"{action.parent.name}-{step['id']}.sh"
                script.write_text("#!/usr/bin/env bash\n" + step["run"])
                scripts.append(script)
    result = run(shellcheck, "--shell=bash", "--format=gcc", *map(str, scripts))
    assert result.returncode == 0, result.stdout + result.stderr


# ---- rules of DESIGN.md "CI surfaces" -------------------------------------------------------------------


def test_the_actions_there_are() -> None:
    assert sorted(p.parent.name for p in ACTIONS[1:]) == sorted(STEPS)
    steps_doc = load(ROOT / "action.yml")["inputs"]["step"]["description"]
    for step in [*UMBRELLA_STEPS, "run"]:
        assert f"`{step}`" in steps_doc


@pytest.mark.parametrize("action", ACTIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_action_rules(action: Path) -> None:
    meta = load(action)
    assert meta["runs"]["using"] == "composite"
    assert len(meta.get("description", "")) > 40, "describe what the action does"
    inputs = meta.get("inputs") or {}
    for name, spec in inputs.items():
        assert len(spec.get("description", "")) > 10, f"input {name} is not documented"
        assert "required" in spec
    for name, spec in (meta.get("outputs") or {}).items():
        assert spec.get("description"), f"output {name} is not documented"
    step_ids = {s.get("id") for s in meta["runs"]["steps"]}
    for name, spec in (meta.get("outputs") or {}).items():
        m = re.fullmatch(r"\$\{\{ steps\.([\w-]+)\.outputs\.([\w-]+) \}\}", spec["value"])
        assert m and m.group(1) in step_ids and m.group(2) == name, f"output {name}: {spec['value']}"
    used_inputs = set()
    for step in meta["runs"]["steps"]:
        script = step.get("run")
        if script is None:
            continue
        assert step.get("shell") == "bash"
        assert not EXPRESSION.search(script), f"step {step['id']}: an expression inside run:, use env:"
        env = step.get("env") or {}
        for key, value in env.items():
            for ref in re.findall(r"inputs\.([\w-]+)", str(value)):
                assert ref in inputs, f"env {key} reads an input that does not exist: {ref}"
                used_inputs.add(ref)
        for ref in re.findall(r"inputs\.([\w-]+)", str(step.get("working-directory", ""))):
            used_inputs.add(ref)
        # docs/index.md's precedence: an input given wins, an empty one leaves the job's LEPTON_CI_* alone. So
        # no step sets LEPTON_CI_* from an input (an empty input would hide the job's setting); the input
        # comes as LEPTON_INPUT_<NAME> and is exported as LEPTON_CI_<NAME> only when non-empty.
        for key, value in env.items():
            assert not (key.startswith("LEPTON_CI_") and "inputs." in str(value)), (
                f"step {step['id']}: env {key} from an input overrides the job's {key} even when the input is empty"
            )
        for name, var in SETTINGS.items():
            if f"LEPTON_INPUT_{var}" in env:
                assert env[f"LEPTON_INPUT_{var}"] == f"${{{{ inputs.{name} }}}}"
                assert f'[ -z "$LEPTON_INPUT_{var}" ] || export LEPTON_CI_{var}="$LEPTON_INPUT_{var}"' in script
        if "LEPTON_INPUT_SIGNING_KEY" in env:
            assert "unset LEPTON_INPUT_SIGNING_KEY" in script, "the key must not linger under a second name"
        read = set(re.findall(r"\$\{?(LEPTON_[A-Z0-9_]+)", script))
        optional = {
            "LEPTON_CI_CONFIG",
            "LEPTON_CI_REGISTRY",
            "LEPTON_CI_SIGNING_KEY",
            "LEPTON_CI_PUBLIC_KEY",
        }  # only unset when empty
        assert read - set(env) - optional == set(), f"step {step['id']} reads env it does not set"
        assert {k for k in env if k.startswith("LEPTON_") and not k.startswith("LEPTON_CI_")} <= read, (
            f"step {step['id']} sets env it never reads"
        )
    assert used_inputs == set(inputs), f"inputs never used: {set(inputs) - used_inputs}"
    assert "version" in inputs and inputs["version"]["default"] == "", (
        "the default installs the source next to the action (split repositories carry it too)"
    )


def test_install_step_is_the_same_in_every_action() -> None:
    """Each action installs lepton-ci itself (a split repository has no sibling to call), with one script:
    the venv an earlier action made is found again by a later one."""
    installs = {}
    for action in ACTIONS:
        first = load(action)["runs"]["steps"][0]
        assert first["id"] == "install" and first["name"] == "Install lepton-ci"
        assert first["env"]["LEPTON_ACTION_PATH"] == "${{ github.action_path }}"
        assert 'echo "$venv/bin" >> "$GITHUB_PATH"' in first["run"], "later steps must find lepton-ci on PATH"
        installs[action] = first["run"]
    assert len(set(installs.values())) == 1, "the install scripts differ"


def test_docs_show_the_workflows_the_e2e_test_runs() -> None:
    shown = dict(doc_workflows())
    e2e = {
        str(p.relative_to(ROOT)): p.read_text() for p in sorted((ROOT / "tests" / "e2e" / "workflows").glob("*.yml"))
    }
    assert set(shown) == set(e2e), "docs/github-actions.md must show every e2e workflow, marked <!-- workflow: PATH -->"
    for path, text in e2e.items():
        assert shown[path] == text, f"docs/github-actions.md shows a different {path}"


def test_documented_inputs_match_the_actions() -> None:
    """docs/github-actions.md has one table of the inputs every action takes and one per action for the
    rest: together they list exactly each action's inputs, in order."""
    text = DOCS.read_text()

    def table(name: str) -> list[str] | None:
        m = re.search(rf"<!-- inputs: {re.escape(name)} -->\n(.*?)\n\n", text + "\n\n", flags=re.S)
        return None if m is None else re.findall(r"^\| `([\w-]+)` \|", m.group(1), flags=re.M)

    common = table("common")
    assert common, "docs/github-actions.md has no table marked <!-- inputs: common -->"
    for action in ACTIONS:
        name = "lepton/ci" if action.parent == ROOT else f"lepton/ci/actions/{action.parent.name}"
        inputs = list(load(action)["inputs"])
        own = [i for i in inputs if i not in common]
        assert [i for i in inputs if i in common] == [i for i in common if i in inputs], f"{name}: common inputs' order"
        documented = table(name)
        assert documented == own or (documented is None and not own), (
            f"{name}: the docs' input table (<!-- inputs: {name} -->) does not match the action: {own}"
        )
