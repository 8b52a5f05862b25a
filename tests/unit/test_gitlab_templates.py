"""GitLab templates: component specs, classic includes kept in step, scripts/check-gitlab-inputs, docs snippets.

The pipelines themselves run in tests/e2e/test_gitlab_ci.py (gitlab-ci-local); this file checks what can be
checked without running them.
"""

from __future__ import annotations

import base64
import json
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
from lepton_ci import __version__ as VERSION

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "gitlab-templates"
COMPONENTS = TEMPLATES / "templates"
CHECKER = TEMPLATES / "check-gitlab-inputs"  # ships with the published project
CHECKER_IN_SCRIPTS = ROOT / "scripts" / "check-gitlab-inputs"
DOCS = ROOT / "docs" / "gitlab.md"
SWEEP_DOCS = ROOT / "docs" / "sweep.md"
STEPS = ["train", "gate", "tag", "build", "deploy", "report"]
# The pipeline component's build job is off unless its `build` input is true: this rule comes first.
BUILD_SWITCH = {"if": '$LEPTON_CI_INPUT_BUILD != "true"', "when": "never"}
INPUT_RE = re.compile(r"\$\[\[\s*inputs\.([A-Za-z0-9_-]+)\s*\]\]")
# Keywords that are global in a .gitlab-ci.yml; a component must not set them.
GLOBAL_KEYWORDS = {
    "default",
    "include",
    "stages",
    "variables",
    "workflow",
    "image",
    "services",
    "cache",
    "before_script",
    "after_script",
    "types",
    "spec",
}
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
        return INPUT_RE.sub(
            lambda m: (
                str(inputs[m.group(1)]).lower() if isinstance(inputs[m.group(1)], bool) else str(inputs[m.group(1)])
            ),
            value,
        )
    return value


def defaults(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v["default"] for k, v in spec.items()}


def is_stop_job(job: dict[str, Any]) -> bool:
    return (job.get("environment") or {}).get("action") == "stop"


def step_of(path: Path, name: str, job: dict[str, Any]) -> str:
    if is_stop_job(job):
        return "stop"
    return path.stem if path.stem in STEPS else name.rsplit("]]", 1)[1]


def is_trigger_job(job: dict[str, Any]) -> bool:
    """A job that runs a child pipeline (the sweep component's): `trigger:` and no script, as GitLab requires."""
    return "trigger" in job


# What GitLab lets a trigger job have (no script, image, cache or artifacts: it runs on no runner).
TRIGGER_KEYS = {"stage", "needs", "rules", "variables", "trigger", "allow_failure", "inherit", "resource_group"}


def scripts_of(job: dict[str, Any]) -> list[str]:
    return [line for key in ("before_script", "script", "after_script") for line in job.get(key) or []]


def component_paths() -> list[Path]:
    return sorted(COMPONENTS.glob("*.yml"))


# ------------------------------------------------------------------------------------------ components


def test_component_layout_is_what_gitlab_requires():
    names = {p.stem for p in component_paths()}
    assert names == set(STEPS) | {"pipeline", "sweep"}
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
            decl["type"] == "number" and isinstance(decl["default"], bool)
        ), f"{path.name}: default of {name}"
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
        if is_trigger_job(job):
            assert set(job) <= TRIGGER_KEYS, f"{path.name}: trigger job {name} has {set(job) - TRIGGER_KEYS}"
        else:
            assert "script" in job


@pytest.mark.parametrize("path", component_paths(), ids=lambda p: p.stem)
def test_component_inputs_reach_scripts_only_through_variables(path: Path):
    _, jobs, _ = load_component(path)
    for name, job in jobs.items():
        for line in scripts_of(job):
            assert "$[[" not in line, f"{path.name}: {name} interpolates an input into a script: {line[:80]}"
        for var in job.get("variables") or {}:
            assert var.startswith("LEPTON_CI_"), var


def test_components_serialize_registry_writes_and_take_runner_tags():
    for path in component_paths():
        _, jobs, _ = load_component(path)
        for name, job in jobs.items():
            step = step_of(path, name, job)
            if step in ("tag", "build", "deploy", "stop"):
                assert INPUT_RE.fullmatch(job["resource_group"]), (path.name, name)
            if step in ("train", "build"):
                assert INPUT_RE.fullmatch(job["tags"]), (path.name, name)
            if step == "stop":
                assert "artifacts" not in job and job["dependencies"] == [] and job["allow_failure"] is True
                continue
            if is_trigger_job(job):  # its artifacts are the child pipeline's jobs'
                continue
            assert job["artifacts"]["when"] == "always"
            assert job["artifacts"]["reports"]["dotenv"].endswith(f".lepton/{step}.env")


def test_components_run_in_merge_request_pipelines_without_duplicates():
    """Merge request pipelines, and branch pipelines only for branches without an open merge request."""
    for path in component_paths():
        _, jobs, _ = load_component(path)
        for name, job in jobs.items():
            step = step_of(path, name, job)
            assert "when" not in job, f"{path.name}: {name}: `when:` next to `rules:` is invalid in GitLab"
            rules = job["rules"]
            if path.stem == "pipeline" and step == "build":
                assert rules[0] == BUILD_SWITCH and job["variables"]["LEPTON_CI_INPUT_BUILD"] == "$[[ inputs.build ]]"
                rules = rules[1:]
            ifs = [(r["if"], r.get("when")) for r in rules]
            when = {"report": "always", "stop": "manual"}.get(step)
            assert ifs == [
                ('$CI_PIPELINE_SOURCE == "merge_request_event"', when),
                ("$CI_COMMIT_BRANCH && $CI_OPEN_MERGE_REQUESTS", "never"),
                ("$CI_COMMIT_BRANCH", when),
            ], (path.name, name)


def test_deploy_components_have_a_stop_job_for_their_environment():
    for path in (COMPONENTS / "deploy.yml", COMPONENTS / "pipeline.yml"):
        spec, jobs, _ = load_component(path)
        rendered = render(jobs, defaults(spec))
        (deploy,) = [j for n, j in rendered.items() if n.endswith("deploy")]
        stop = rendered[deploy["environment"]["on_stop"]]
        assert stop["environment"] == {"name": deploy["environment"]["name"], "action": "stop"}
        assert stop["stage"] == deploy["stage"] and stop["resource_group"] == deploy["resource_group"]
        assert "url" not in deploy["environment"]  # 127.0.0.1 of a runner is nobody's URL


def test_pipeline_component_is_the_step_components_put_together():
    pspec, pipeline, _ = load_component(COMPONENTS / "pipeline.yml")
    rendered = render(pipeline, {**defaults(pspec), "build": True})
    build = rendered["lepton-build"]
    assert build["rules"].pop(0) == BUILD_SWITCH and build["variables"].pop("LEPTON_CI_INPUT_BUILD") is True
    seen = set()
    for step in STEPS:
        spec, jobs, _ = load_component(COMPONENTS / f"{step}.yml")
        values = defaults(spec)
        if step == "build":  # its own stage by default; the pipeline's runs beside deploy, so that no stage is new
            values["stage"] = pspec["build-stage"]["default"]
        for name, job in render(jobs, values).items():
            assert rendered[name] == job, (step, name)
            seen.add(name)
    assert seen == set(rendered)


def test_components_install_from_their_own_project_at_their_own_commit():
    """No release pin by default: the setup installs from the component project's archive at component.sha."""
    for path in component_paths():
        text = path.read_text()
        header = yaml.safe_load(text.split("\n---\n", 1)[0])
        assert header["spec"]["component"] == ["sha"], path.name  # GitLab interpolates only what spec names
        spec, jobs, _ = load_component(path)
        assert spec["package"]["default"] == "" and spec["extras"]["default"] == ""
        for name, job in jobs.items():
            assert job["variables"]["LEPTON_CI_SOURCE_REF"] == "$[[ component.sha ]]", (path.name, name)
            assert job["variables"]["LEPTON_CI_INPUT_PACKAGE"] == "$[[ inputs.package ]]"


def test_default_image_has_git():
    """train records git info and `git:` baselines read revisions: the default image must have git."""
    images = [load_component(p)[0]["image"]["default"] for p in component_paths()]
    images += [hidden_jobs(p)[".lepton-setup"]["image"] for p in TEMPLATES.glob("lepton*.yml")]
    assert set(images) == {"python:3.12"}  # the full Debian image; -slim and -alpine have no git


def _setup_lines(upto: str) -> str:
    setup = hidden_jobs(TEMPLATES / "lepton.yml")[".lepton-setup"]["before_script"][0]
    return setup.split(upto, 1)[0] + upto


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"LEPTON_CI_REGISTRY": "file:///global"}, "file:///global"),
        ({"LEPTON_CI_REGISTRY": "file:///global", "LEPTON_CI_INPUT_REGISTRY": ""}, "file:///global"),
        ({"LEPTON_CI_REGISTRY": "file:///global", "LEPTON_CI_INPUT_REGISTRY": "oci://input/x"}, "oci://input/x"),
        ({"LEPTON_CI_INPUT_REGISTRY": "oci://input/x"}, "oci://input/x"),
        ({}, "<unset>"),
    ],
)
def test_settings_a_non_empty_input_wins_an_empty_one_leaves_the_variable(env: dict[str, str], expected: str):
    script = _setup_lines("done\n") + 'echo "registry=${LEPTON_CI_REGISTRY-<unset>}"\n'
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    r = subprocess.run(["sh", "-c", script], env={**clean, **env}, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"registry={expected}"


def test_setup_says_in_one_line_when_git_is_missing(tmp_path: Path):
    """Without git on PATH the setup warns once, naming what needs git and what to do, and goes on."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("python3", "sh", "sed", "cat", "cksum", "mkdir"):
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)
    script = _setup_lines('"${LEPTON_CI_DIRECTORY:=.}"\n') + 'echo "went on"\n'
    r = subprocess.run(["sh", "-c", script], env={"PATH": str(bindir)}, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "went on", r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no git" in lines[0] and "git: baselines" in lines[0], lines
    assert "python:3.12" in lines[0] and "apt-get install -y git" in lines[0]


def _run_build_script(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, list[str], Any]:
    """The build job's script with a stand-in `lepton-ci` that records its arguments and the docker config it saw."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    seen = tmp_path / "seen.json"
    fake = bindir / "lepton-ci"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "cfg = os.path.join(os.environ.get('DOCKER_CONFIG', '/nonexistent'), 'config.json')\n"
        "config = json.load(open(cfg)) if os.path.isfile(cfg) else None\n"
        "mode = oct(os.stat(cfg).st_mode & 0o777) if config is not None else None\n"
        f"json.dump({{'args': sys.argv[1:], 'config': config, 'mode': mode}}, open({str(seen)!r}, 'w'))\n"
    )
    fake.chmod(0o755)
    if not (bindir / "python").exists():
        (bindir / "python").symlink_to(sys.executable)
    seen.unlink(missing_ok=True)
    script = "\n".join(hidden_jobs(TEMPLATES / "lepton.yml")[".lepton-build"]["script"])
    path = f"{bindir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    r = subprocess.run(
        ["sh", "-e", "-c", script],
        env={"PATH": path, "HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    data = json.loads(seen.read_text()) if seen.is_file() else {}
    return r, data.get("args", []), data


def test_build_job_hands_gitlabs_registry_credentials_to_lepton_ci_without_printing_them(tmp_path: Path):
    """CI_REGISTRY_USER/PASSWORD go into a private docker config for CI_REGISTRY only, merged with the user's
    own; the password is in no output; the config is gone afterwards; settings become flags."""
    password = "glcbt-registry-password-7"
    home_config = tmp_path / "home" / ".docker" / "config.json"
    home_config.parent.mkdir(parents=True)
    home_config.write_text(json.dumps({"auths": {"ghcr.io": {"auth": "b3RoZXI6c2VjcmV0"}}}))
    env = {
        "CI_REGISTRY": "registry.example.com",
        "CI_REGISTRY_USER": "gitlab-ci-token",
        "CI_REGISTRY_PASSWORD": password,
        "LEPTON_CI_INPUT_BUILD_PUSH": "true",
        "LEPTON_CI_BUILD_TAGS": "latest stable",
        "LEPTON_CI_BUILD_ON_TOP_OF": "ignored.example.com/x:base",
        "LEPTON_CI_INPUT_BUILD_ON_TOP_OF": "registry.example.com/acme/serve:base-1",
    }
    r, args, seen = _run_build_script(tmp_path, env)
    assert r.returncode == 0, r.stderr
    assert password not in r.stdout + r.stderr
    assert args == [
        "build",
        "--progress",
        "auto",
        "--on-top-of",
        "registry.example.com/acme/serve:base-1",
        "--push",
        "--tag",
        "latest",
        "--tag",
        "stable",
    ]
    auths = seen["config"]["auths"]
    assert set(auths) == {"ghcr.io", "registry.example.com"} and seen["mode"] == "0o600"
    assert base64.b64decode(auths["registry.example.com"]["auth"]).decode() == f"gitlab-ci-token:{password}"
    assert [p for p in tmp_path.iterdir() if p.name.startswith("tmp")] == []  # the private config is removed
    assert json.loads(home_config.read_text()) == {"auths": {"ghcr.io": {"auth": "b3RoZXI6c2VjcmV0"}}}

    # Off, or LEPTON_REGISTRY_USER set (it wins for every registry): no docker config of the job's own.
    for extra in ({"LEPTON_CI_REGISTRY_LOGIN": "false"}, {"LEPTON_REGISTRY_USER": "robot"}):
        r, args, seen = _run_build_script(tmp_path, {**env, **extra})
        assert r.returncode == 0 and seen["config"] is None, r.stderr
    r, args, _ = _run_build_script(tmp_path, {"LEPTON_CI_BUILD_PUSH": "yes"})
    assert r.returncode == 2 and args == [] and "LEPTON_CI_BUILD_PUSH must be true, false or empty" in r.stderr


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
    assert list(jobs) == [".lepton-setup"] + [
        f".lepton-{s}" for s in ("train", "gate", "tag", "build", "deploy", "stop", "report", "sweep-plan")
    ]
    stop = jobs[".lepton-stop"]
    assert stop["environment"] == {"name": jobs[".lepton-deploy"]["environment"]["name"], "action": "stop"}
    assert stop["when"] == "manual" and stop["resource_group"] == "lepton-registry" and stop["dependencies"] == []
    for step in STEPS:
        job = jobs[f".lepton-{step}"]
        assert job["extends"] == ".lepton-setup" and job["stage"] == step
        assert job["variables"]["LEPTON_CI_DOTENV"] == f".lepton/{step}.env"
        assert job["artifacts"]["reports"]["dotenv"] == f".lepton/{step}.env"
    assert {jobs[f".lepton-{s}"]["resource_group"] for s in ("tag", "build", "deploy")} == {"lepton-registry"}
    plan = jobs[".lepton-sweep-plan"]
    assert plan["extends"] == ".lepton-setup" and plan["stage"] == "train"
    assert plan["variables"]["LEPTON_CI_DOTENV"] == plan["artifacts"]["reports"]["dotenv"] == ".lepton/sweep-plan.env"
    assert ".lepton/sweep-pipeline.yml" in plan["artifacts"]["paths"]
    assert "$[[" not in (TEMPLATES / "lepton.yml").read_text()


@pytest.mark.parametrize("step", ["setup"] + STEPS + ["sweep"])
def test_classic_step_files_match_the_all_in_one(step: str):
    allinone = hidden_jobs(TEMPLATES / "lepton.yml")
    jobs = hidden_jobs(TEMPLATES / f"lepton-{step}.yml")
    expected = [".lepton-setup"] + {
        "setup": [],
        "deploy": [".lepton-deploy", ".lepton-stop"],
        "sweep": [".lepton-sweep-plan"],
    }.get(step, [f".lepton-{step}"])
    assert list(jobs) == expected
    for name in expected:
        assert jobs[name] == allinone[name], f"lepton-{step}.yml: {name} differs from lepton.yml's"


def test_classic_and_components_run_the_same_scripts():
    classic = hidden_jobs(TEMPLATES / "lepton.yml")
    setup = classic[".lepton-setup"]["before_script"]
    for path in component_paths():
        spec, jobs, _ = load_component(path)
        for name, job in jobs.items():
            step = step_of(path, name, job)
            if is_trigger_job(job):  # no script: test_sweep_component_triggers_the_child_pipeline_its_plan_job_writes
                continue
            assert job["before_script"] == setup, f"templates/{path.name}: {name}: setup differs from .lepton-setup"
            assert job["script"] == classic[f".lepton-{step}"]["script"], f"templates/{path.name}: {name}: script"


def test_sweep_component_triggers_the_child_pipeline_its_plan_job_writes():
    spec, jobs, _ = load_component(COMPONENTS / "sweep.yml")
    rendered = render(jobs, defaults(spec))
    plan, trigger = rendered["lepton-sweep-plan"], rendered["lepton-sweep"]
    assert trigger["trigger"] == {
        "include": [{"artifact": ".lepton/sweep-pipeline.yml", "job": "lepton-sweep-plan"}],
        "strategy": "depend",
    }
    assert trigger["needs"] == ["lepton-sweep-plan"] and trigger["stage"] == plan["stage"]
    assert ".lepton/sweep-pipeline.yml" in plan["artifacts"]["paths"]
    assert 'lepton_ci_pipeline="${OLDPWD:-$CI_PROJECT_DIR}/.lepton/sweep-pipeline.yml"' in plan["script"][0]
    # The trigger job's variables are the child pipeline's: it installs the lepton-ci the plan job installed.
    for key in ("PACKAGE", "EXTRAS", "SOURCE_PROJECT"):
        assert trigger["variables"][f"LEPTON_CI_INPUT_{key}"] == plan["variables"][f"LEPTON_CI_INPUT_{key}"], key
    assert trigger["variables"]["LEPTON_CI_VENV"] == plan["variables"]["LEPTON_CI_VENV"]
    assert "LEPTON_CI_DOTENV" not in trigger["variables"]  # the child's jobs name their own


# the plan job's default include: the classic lepton.yml at the version these templates are published under
TEMPLATES_AT_VERSION = f"'lepton/ci-templates', ref: '{VERSION}', file: /lepton.yml}}"


@pytest.mark.parametrize(
    "env, expected",
    [
        (
            {},
            ["--then", "gate", "--then", "tag", "--then", "report", "--include", f"{{project: {TEMPLATES_AT_VERSION}"],
        ),
        (
            {"LEPTON_CI_SWEEP_THEN": "", "LEPTON_CI_SOURCE_PROJECT": "acme/mirror", "LEPTON_CI_SOURCE_REF": "0123abc"},
            ["--include", "{project: 'acme/mirror', ref: '0123abc', file: /lepton.yml}"],
        ),
        (
            {"LEPTON_CI_SWEEP_THEN": "gate", "LEPTON_CI_SWEEP_INCLUDE": "{local: ci/a.yml}\n\n{template: b.yml}\n"},
            ["--then", "gate", "--include", "{local: ci/a.yml}", "--include", "{template: b.yml}"],
        ),
    ],
)
def test_sweep_plan_script_passes_steps_and_child_includes(tmp_path: Path, env: dict[str, str], expected: list[str]):
    """The plan job's script with a stand-in `lepton-ci` that prints its arguments, one a line."""
    (tmp_path / "lepton-ci").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (tmp_path / "lepton-ci").chmod(0o755)
    script = hidden_jobs(TEMPLATES / "lepton.yml")[".lepton-sweep-plan"]["script"][0].replace("\ncat ", "\ntrue ")
    path = f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    env = {"PATH": path, "LEPTON_CI_DIRECTORY": "ml", "OLDPWD": "/builds/acme/p", **env}
    r = subprocess.run(["sh", "-e", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    out = "/builds/acme/p/.lepton/sweep-pipeline.yml"
    head = ["sweep", "plan", "--format", "gitlab", "--directory", "ml", "--output", out]
    assert r.stdout.splitlines() == head + expected


def test_classic_templates_match_gitlabs_schema():
    cmd = _check_jsonschema()
    files = [str(p) for p in sorted(TEMPLATES.glob("*.yml"))]
    r = subprocess.run([*cmd, *files], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------------------------------------ check-gitlab-inputs


def checker(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECKER), *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_checker_ships_with_the_templates_and_runs_from_scripts_too(tmp_path: Path):
    """The published project carries the checker next to templates/; scripts/check-gitlab-inputs runs it."""
    ci = write(tmp_path / ".gitlab-ci.yml", "include:\n  - component: gitlab.com/lepton/ci-templates/gate@0.1.0\n")
    shipped = tmp_path / "published"
    shutil.copytree(TEMPLATES, shipped)
    for exe in (shipped / "check-gitlab-inputs", CHECKER_IN_SCRIPTS):
        r = subprocess.run([sys.executable, str(exe), str(ci)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "1 lepton-ci component include(s) checked" in r.stdout, r.stderr


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_checker_accepts_valid_inputs(tmp_path: Path):
    ci = write(
        tmp_path / ".gitlab-ci.yml",
        """\
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
        """,
    )
    r = checker(str(ci))
    assert r.returncode == 0, r.stderr
    assert "3 lepton-ci component include(s) checked" in r.stdout


@pytest.mark.parametrize(
    "inputs, message",
    [
        ("{bogus: 1}", "unknown input 'bogus' (known inputs: directory, extras, image, job-name,"),
        ("{job_name: fit}", "unknown input 'job_name' (did you mean 'job-name'?)"),
        ("{tags: gpu}", "input 'tags' must be an array, got string 'gpu'"),
        ("{stage: 3}", "input 'stage' must be a string, got number 3"),
        ("{params: true}", "input 'params' must be a string, got boolean true"),
        ("[a, b]", "inputs must be a mapping, got array"),
    ],
)
def test_checker_names_file_include_and_input(tmp_path: Path, inputs: str, message: str):
    ci = write(
        tmp_path / ".gitlab-ci.yml",
        f"""\
        include:
          - component: $CI_SERVER_FQDN/lepton/ci-templates/train@0.1.0
            inputs: {inputs}
        """,
    )
    r = checker(str(ci))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"{ci}: include component $CI_SERVER_FQDN/lepton/ci-templates/train@0.1.0: "), lines[0]
    assert message in lines[0], lines[0]


def test_checker_boolean_inputs_refuse_strings(tmp_path: Path):
    ci = write(
        tmp_path / "ci.yml",
        """\
        include:
          component: gitlab.com/lepton/ci-templates/deploy@0.1.0
          inputs:
            allow-unblessed: "true"
        """,
    )
    r = checker(str(ci))
    assert r.returncode == 1 and "input 'allow-unblessed' must be a boolean, got string 'true'" in r.stderr


def test_checker_follows_local_includes_and_reports_unknown_components(tmp_path: Path):
    write(
        tmp_path / "ci" / "ml.yml",
        """\
        include:
          - component: gitlab.com/lepton/ci-templates/gate@0.1.0
            inputs: {baseline: production, treshold: 1}
          - component: gitlab.com/lepton/ci-templates/evaluate@0.1.0
        """,
    )
    ci = write(tmp_path / ".gitlab-ci.yml", "include:\n  - local: ci/ml.yml\n")
    r = checker(str(ci))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2, r.stderr
    assert "ml.yml: include component gitlab.com/lepton/ci-templates/gate@0.1.0: unknown input 'treshold'" in lines[0]
    assert (
        "no component 'evaluate'" in lines[1]
        and f"components: {', '.join(sorted(p.stem for p in component_paths()))}" in lines[1]
    )


def test_checker_options_regex_and_required_inputs(tmp_path: Path):
    templates = tmp_path / "templates"
    write(
        templates / "thing" / "template.yml",
        """\
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
        """,
    )
    ci = write(
        tmp_path / "ci.yml",
        """\
        include:
          - component: example.com/acme/things/thing@1.0.0
            inputs: {level: medium, version: "1.2"}
        """,
    )
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
    # docs/sweep.md's GitLab pipelines (its other yaml blocks are lepton.yml and a GitHub workflow)
    marked = r"<!-- (?:test|lint): (sweep-[a-z-]+) -->\n```yaml\n(.*?)```"
    sweep = re.findall(marked, SWEEP_DOCS.read_text(), flags=re.S)
    assert {name for name, _ in sweep} == {"sweep-component", "sweep-classic"}
    for name, body in [*doc_snippets().items(), *sweep, *((f"readme-{i}", b) for i, b in enumerate(readme))]:
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


def test_no_template_pins_an_unpublished_release_and_the_classic_source_ref_is_this_version():
    """Components install from their own commit; the classic include from its own tag (= this version)."""
    from lepton_ci import __version__

    for path in [*component_paths(), *TEMPLATES.glob("*.yml")]:
        text = path.read_text()
        assert not re.search(r"LEPTON_CI_PACKAGE:=|default: \"lepton-ci", text), path.name
        assert not re.search(r"lepton-ci==(?!" + re.escape(__version__) + r"\b)\d", text), path.name
    for path in TEMPLATES.glob("lepton*.yml"):
        assert f'"${{LEPTON_CI_SOURCE_REF:={__version__}}}"' in path.read_text(), path.name
    docs = DOCS.read_text()
    assert f"@{__version__}" in docs and f"ref: {__version__}" in docs
    pins = [name for name, body in doc_snippets().items() if f"=={__version__}" in body]
    assert pins == ["pinned-release"], "a documented pipeline pins a release instead of installing from source"
