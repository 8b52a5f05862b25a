"""GitLab templates: component specs, classic includes kept in step, scripts/check-gitlab-inputs, docs snippets.

The pipelines themselves run in tests/e2e/test_gitlab_ci.py (gitlab-ci-local); this file checks what can be
checked without running them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "gitlab-templates"
COMPONENTS = TEMPLATES / "templates"
CHECKER = ROOT / "scripts" / "check-gitlab-inputs"
DOCS = ROOT / "docs" / "gitlab.md"
STEPS = ["train", "gate", "tag", "deploy", "report"]
INPUT_RE = re.compile(r"\$\[\[\s*inputs\.([A-Za-z0-9_-]+)\s*\]\]")
# Keywords that are global in a .gitlab-ci.yml; a component must not set them.
GLOBAL_KEYWORDS = {"default", "include", "stages", "variables", "workflow", "image", "services", "cache",
                   "before_script", "after_script", "types", "spec"}
TYPES = {"string": str, "number": (int, float), "boolean": bool, "array": list}


def load_component(path: Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    text = path.read_text()
    docs = list(yaml.safe_load_all(text))
    assert len(docs) == 2, f"{path.name}: expected a spec header document and a jobs document"
    return docs[0]["spec"]["inputs"], docs[1], text.split("\n---\n", 1)[1]


def render(value: Any, inputs: dict[str, Any]) -> Any:
    """Interpolate $[[ inputs.x ]] the way GitLab does: a whole-value reference keeps the input's type."""
    if isinstance(value, dict):
        return {render(k, inputs): render(v, inputs) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, inputs) for v in value]
    if isinstance(value, str):
        whole = INPUT_RE.fullmatch(value.strip())
        if whole:
            return inputs[whole.group(1)]
        return INPUT_RE.sub(lambda m: str(inputs[m.group(1)]).lower() if isinstance(inputs[m.group(1)], bool)
                            else str(inputs[m.group(1)]), value)
    return value


def defaults(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v["default"] for k, v in spec.items()}


def scripts_of(job: dict[str, Any]) -> list[str]:
    return [line for key in ("before_script", "script", "after_script") for line in job.get(key) or []]


def component_paths() -> list[Path]:
    return sorted(COMPONENTS.glob("*.yml"))


# ------------------------------------------------------------------------------------------ components

def test_component_layout_is_what_gitlab_requires():
    names = {p.stem for p in component_paths()}
    assert names == set(STEPS) | {"pipeline"}
    assert not [p for p in COMPONENTS.iterdir() if p.is_dir() and not (p / "template.yml").is_file()]


@pytest.mark.parametrize("path", component_paths(), ids=lambda p: p.stem)
def test_component_spec_inputs_are_typed_documented_and_used(path: Path):
    spec, jobs, body = load_component(path)
    for name, decl in spec.items():
        assert re.fullmatch(r"[a-z][a-z0-9-]*", name), name
        assert decl.get("type") in TYPES, f"{path.name}: input {name} has no valid type"
        assert decl.get("description"), f"{path.name}: input {name} has no description"
        assert "default" in decl, f"{path.name}: input {name} has no default"
        assert isinstance(decl["default"], TYPES[decl["type"]]) and not (
            decl["type"] == "number" and isinstance(decl["default"], bool)), f"{path.name}: default of {name}"
    used = set(INPUT_RE.findall(body))
    assert used <= set(spec), f"{path.name}: undeclared inputs {used - set(spec)}"
    assert set(spec) <= used, f"{path.name}: declared but unused inputs {set(spec) - used}"


@pytest.mark.parametrize("path", component_paths(), ids=lambda p: p.stem)
def test_component_has_no_global_keywords_and_names_jobs_from_inputs(path: Path):
    spec, jobs, _ = load_component(path)
    assert not set(jobs) & GLOBAL_KEYWORDS, f"{path.name}: global keywords {set(jobs) & GLOBAL_KEYWORDS}"
    for name, job in jobs.items():
        assert INPUT_RE.search(name), f"{path.name}: job name {name!r} is not an input"
        assert INPUT_RE.fullmatch(str(job["stage"])), f"{path.name}: stage of {name} is not an input"
        assert "script" in job


@pytest.mark.parametrize("path", component_paths(), ids=lambda p: p.stem)
def test_component_inputs_reach_scripts_only_through_variables(path: Path):
    _, jobs, _ = load_component(path)
    for name, job in jobs.items():
        for line in scripts_of(job):
            assert "$[[" not in line, f"{path.name}: {name} interpolates an input into a script: {line[:80]}"
        for var, value in (job.get("variables") or {}).items():
            assert var.startswith("LEPTON_CI_"), var


def test_components_serialize_registry_writes_and_take_runner_tags():
    for path in component_paths():
        _, jobs, _ = load_component(path)
        for name, job in jobs.items():
            step = path.stem if path.stem in STEPS else name.rsplit("]]", 1)[1]
            if step in ("tag", "deploy"):
                assert INPUT_RE.fullmatch(job["resource_group"]), (path.name, name)
            if step == "train":
                assert INPUT_RE.fullmatch(job["tags"]), (path.name, name)
            if step == "report":
                assert job["when"] == "always"
            assert job["artifacts"]["when"] == "always"
            assert job["artifacts"]["reports"]["dotenv"].endswith(f".lepton/{step}.env")


def test_pipeline_component_is_the_step_components_put_together():
    _, pipeline, _ = load_component(COMPONENTS / "pipeline.yml")
    pspec = load_component(COMPONENTS / "pipeline.yml")[0]
    rendered = render(pipeline, defaults(pspec))
    for step in STEPS:
        spec, jobs, _ = load_component(COMPONENTS / f"{step}.yml")
        (job,) = render(jobs, defaults(spec)).values()
        assert rendered[f"lepton-{step}"] == job, step


def _check_jsonschema() -> list[str]:
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    if exe is None:
        if os.environ.get("CI") == "true" or os.environ.get("LEPTON_GITLAB_CI_LOCAL"):
            pytest.fail("check-jsonschema is missing: scripts/deps/30-gitlab.sh should have installed it")
        pytest.skip("check-jsonschema not installed (scripts/test installs it)")
    return [exe, "--builtin-schema", "vendor.gitlab-ci"]


def test_components_rendered_with_defaults_match_gitlabs_schema(tmp_path: Path):
    cmd = _check_jsonschema()
    files = []
    for path in component_paths():
        spec, jobs, _ = load_component(path)
        values = defaults(spec)
        for key, decl in spec.items():
            if decl["type"] == "array":  # GitLab accepts tags: [], its published schema wants one tag
                values[key] = ["gpu"]
        out = tmp_path / f"{path.stem}.yml"
        out.write_text(yaml.safe_dump({"stages": STEPS, **render(jobs, values)}, sort_keys=False))
        files.append(str(out))
    r = subprocess.run([*cmd, *files], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------------------------------------ classic

def hidden_jobs(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert all(k.startswith(".lepton-") for k in data), f"{path.name}: only hidden .lepton-* jobs belong here"
    return data


def test_classic_all_in_one_has_every_hidden_job():
    jobs = hidden_jobs(TEMPLATES / "lepton.yml")
    assert list(jobs) == [".lepton-setup"] + [f".lepton-{s}" for s in STEPS]
    for step in STEPS:
        job = jobs[f".lepton-{step}"]
        assert job["extends"] == ".lepton-setup" and job["stage"] == step
        assert job["variables"]["LEPTON_CI_DOTENV"] == f".lepton/{step}.env"
        assert job["artifacts"]["reports"]["dotenv"] == f".lepton/{step}.env"
    assert jobs[".lepton-tag"]["resource_group"] == jobs[".lepton-deploy"]["resource_group"] == "lepton-registry"
    assert "$[[" not in (TEMPLATES / "lepton.yml").read_text()


@pytest.mark.parametrize("step", ["setup"] + STEPS)
def test_classic_step_files_match_the_all_in_one(step: str):
    allinone = hidden_jobs(TEMPLATES / "lepton.yml")
    jobs = hidden_jobs(TEMPLATES / f"lepton-{step}.yml")
    expected = [".lepton-setup"] + ([] if step == "setup" else [f".lepton-{step}"])
    assert list(jobs) == expected
    for name in expected:
        assert jobs[name] == allinone[name], f"lepton-{step}.yml: {name} differs from lepton.yml's"


def test_classic_and_components_run_the_same_scripts():
    classic = hidden_jobs(TEMPLATES / "lepton.yml")
    setup = classic[".lepton-setup"]["before_script"]
    for step in STEPS:
        spec, jobs, _ = load_component(COMPONENTS / f"{step}.yml")
        (job,) = jobs.values()
        assert job["before_script"] == setup, f"templates/{step}.yml: setup differs from .lepton-setup"
        assert job["script"] == classic[f".lepton-{step}"]["script"], f"templates/{step}.yml: script differs"


def test_classic_templates_match_gitlabs_schema():
    cmd = _check_jsonschema()
    files = [str(p) for p in sorted(TEMPLATES.glob("*.yml"))]
    r = subprocess.run([*cmd, *files], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------------------------------------ check-gitlab-inputs

def checker(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECKER), *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_checker_accepts_valid_inputs(tmp_path: Path):
    ci = write(tmp_path / ".gitlab-ci.yml", """\
        include:
          - component: $CI_SERVER_FQDN/lepton/ci-templates/train@0.1.0
            inputs:
              job-name: fit
              tags: [gpu]
              params: "C=0.5"
          - component: gitlab.com/lepton/ci-templates/report@0.1.0
            inputs: {post: false, workflow: nightly}
          - component: $CI_SERVER_FQDN/$CI_PROJECT_PATH/pipeline@$CI_COMMIT_SHA
          - component: gitlab.com/someone/else/train@1.0.0
            inputs: {whatever: 1}
          - local: /other.yml
        fit:
          script: [!reference [.x, script]]
        """)
    r = checker(str(ci))
    assert r.returncode == 0, r.stderr
    assert "3 lepton-ci component include(s) checked" in r.stdout


@pytest.mark.parametrize("inputs, message", [
    ("{bogus: 1}", "unknown input 'bogus' (known inputs: directory, image, job-name,"),
    ("{job_name: fit}", "unknown input 'job_name' (did you mean 'job-name'?)"),
    ("{tags: gpu}", "input 'tags' must be an array, got string 'gpu'"),
    ("{stage: 3}", "input 'stage' must be a string, got number 3"),
    ("{params: true}", "input 'params' must be a string, got boolean true"),
    ("[a, b]", "inputs must be a mapping, got array"),
])
def test_checker_names_file_include_and_input(tmp_path: Path, inputs: str, message: str):
    ci = write(tmp_path / ".gitlab-ci.yml", f"""\
        include:
          - component: $CI_SERVER_FQDN/lepton/ci-templates/train@0.1.0
            inputs: {inputs}
        """)
    r = checker(str(ci))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"{ci}: include component $CI_SERVER_FQDN/lepton/ci-templates/train@0.1.0: "), lines[0]
    assert message in lines[0], lines[0]


def test_checker_boolean_inputs_refuse_strings(tmp_path: Path):
    ci = write(tmp_path / "ci.yml", """\
        include:
          component: gitlab.com/lepton/ci-templates/deploy@0.1.0
          inputs:
            allow-unblessed: "true"
        """)
    r = checker(str(ci))
    assert r.returncode == 1 and "input 'allow-unblessed' must be a boolean, got string 'true'" in r.stderr


def test_checker_follows_local_includes_and_reports_unknown_components(tmp_path: Path):
    write(tmp_path / "ci" / "ml.yml", """\
        include:
          - component: gitlab.com/lepton/ci-templates/gate@0.1.0
            inputs: {baseline: production, treshold: 1}
          - component: gitlab.com/lepton/ci-templates/evaluate@0.1.0
        """)
    ci = write(tmp_path / ".gitlab-ci.yml", "include:\n  - local: ci/ml.yml\n")
    r = checker(str(ci))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2, r.stderr
    assert "ml.yml: include component gitlab.com/lepton/ci-templates/gate@0.1.0: unknown input 'treshold'" in lines[0]
    assert "no component 'evaluate'" in lines[1] and "components: deploy, gate, pipeline, report, tag, train" in lines[1]


def test_checker_options_regex_and_required_inputs(tmp_path: Path):
    templates = tmp_path / "templates"
    write(templates / "thing" / "template.yml", """\
        spec:
          inputs:
            level:
              options: [low, high]
              default: low
            version:
              regex: ^v\\d+$
              default: v1
            target:
              description: no default, so required
        ---
        "thing":
          script: [echo "$TARGET"]
        """)
    ci = write(tmp_path / "ci.yml", """\
        include:
          - component: example.com/acme/things/thing@1.0.0
            inputs: {level: medium, version: "1.2"}
        """)
    r = checker("--templates", str(templates), "--project", "acme/things", str(ci))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 3, r.stderr
    assert "input 'level' must be one of low, high, got string 'medium'" in lines[0]
    assert "input 'version' does not match /^v\\d+$/: '1.2'" in lines[1]
    assert "required input 'target' is missing" in lines[2]
    assert all(line.startswith(f"{ci}: include component example.com/acme/things/thing@1.0.0: ") for line in lines)


def test_checker_unreadable_or_invalid_yaml_is_exit_2(tmp_path: Path):
    bad = write(tmp_path / "bad.yml", "include: [\n")
    r = checker(str(bad))
    assert r.returncode == 2 and "bad.yml:" in r.stderr and "not valid YAML" in r.stderr
    r = checker(str(tmp_path / "missing.yml"))
    assert r.returncode == 2 and "cannot read" in r.stderr


# ------------------------------------------------------------------------------------------ docs

def doc_snippets() -> dict[str, str]:
    text = DOCS.read_text()
    found = re.findall(r"<!-- (test|lint): ([a-z0-9-]+) -->\n```yaml\n(.*?)```", text, flags=re.S)
    return {name: body for _kind, name, body in found}


def test_every_yaml_block_in_the_docs_is_run_or_linted():
    text = DOCS.read_text()
    assert text.count("```yaml") == len(doc_snippets()), "a ```yaml block in docs/gitlab.md has no test/lint marker"


def test_docs_have_the_snippets_the_e2e_test_runs():
    assert {"classic", "components", "pipeline"} <= set(doc_snippets())


def test_docs_snippets_lint_clean(tmp_path: Path):
    cmd = _check_jsonschema()
    files = []
    readme = re.findall(r"```yaml\n(.*?)```", (TEMPLATES / "README.md").read_text(), flags=re.S)
    for name, body in [*doc_snippets().items(), *((f"readme-{i}", b) for i, b in enumerate(readme))]:
        f = tmp_path / f"{name}.gitlab-ci.yml"
        f.write_text(body)
        files.append(str(f))
    r = subprocess.run([*cmd, *files], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = checker(*files)
    assert r.returncode == 0, r.stderr


def test_docs_list_every_component_input():
    text = DOCS.read_text()
    table = text.split("## Component inputs", 1)[1].split("\n## ", 1)[0]
    for path in component_paths():
        spec, _, _ = load_component(path)
        for name in spec:
            assert f"`{name}`" in table, f"docs/gitlab.md does not list input {name} of {path.stem}"


def test_component_defaults_pin_the_package_version():
    from lepton_ci import __version__

    for path in [*component_paths(), *TEMPLATES.glob("*.yml")]:
        text = path.read_text()
        assert f"lepton-ci=={__version__}" in text, path.name
        assert not re.search(r"lepton-ci==(?!" + re.escape(__version__) + r"\b)\d", text), path.name
    assert f"@{__version__}" in DOCS.read_text() and f"ref: {__version__}" in DOCS.read_text()
