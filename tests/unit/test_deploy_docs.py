"""docs/deploy.md's Kubernetes and Lepton sections stay true: the copy-paste GitHub workflow passes
actionlint (with ShellCheck on its scripts) and zizmor, every documented kubernetes config renders manifests
that pass kubernetes-validate in strict mode, every documented lepton config builds a body the platform's
types accept, and the key tables list exactly the schema's keys."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from lepton_ci.config import load_schema
from lepton_ci.deploy import manifests
from lepton_ci.deploy.base import DeploySpec
from lepton_ci.records import ModelVersion
from tests.e2e.helpers import require
from tests.support.tools import github_actions_tool
from tests.unit.test_docs import code_blocks

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_MD = ROOT / "docs" / "deploy.md"
MARKER = "<!-- kubernetes-workflow -->"


def workflow() -> str:
    text = DEPLOY_MD.read_text(encoding="utf-8")
    start = text.index(MARKER) + len(MARKER)
    block = text[start:].lstrip("\n")
    assert block.startswith("```yaml\n")
    return block[len("```yaml\n"):block.index("\n```", 8) + 1]


def documented_configs(target: str) -> list[dict]:
    found = []
    for block in code_blocks(DEPLOY_MD):
        if block.lang == "yaml":
            data = yaml.safe_load("\n".join(block.lines))
            if isinstance(data, dict) and (data.get("deploy") or {}).get("target") == target:
                found.append(data)
    return found


def _spec(data: dict) -> DeploySpec:
    mv = ModelVersion(name=data["model"]["name"], version=3, digest="sha256:" + "ab" * 32)
    return DeploySpec(version=mv, model_dir=None, model_file="model.joblib", framework="sklearn",
                      options=data["deploy"], state_dir=Path("/nonexistent"))


def test_workflow_passes_actionlint_and_zizmor(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=60)
    path = tmp_path / ".github" / "workflows" / "deploy-kubernetes.yml"
    path.parent.mkdir(parents=True)
    path.write_text(workflow())
    data = yaml.safe_load(path.read_text())
    steps = data["jobs"]["deploy"]["steps"]
    assert any(s.get("uses", "").startswith("lepton/ci/actions/deploy@") for s in steps)
    assert "secrets.KUBECONFIG" in path.read_text() and "concurrency" in data
    proc = subprocess.run([github_actions_tool("actionlint"), "-shellcheck", github_actions_tool("shellcheck"),
                           "-format", "{{json .}}", str(path)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert json.loads(proc.stdout or "[]") == [] and proc.returncode == 0, proc.stdout + proc.stderr
    # zizmor, pedantic, with the project's own policy: lepton's actions by tag, everything else by hash
    from tests.unit.test_action_lint import ZIZMOR_CONFIG

    config = tmp_path / "zizmor.yml"
    config.write_text(ZIZMOR_CONFIG)
    proc = subprocess.run([github_actions_tool("zizmor"), "--offline", "--no-progress", "--persona", "pedantic",
                           "--config", str(config), str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_documented_kubernetes_configs_render_valid_manifests() -> None:
    kv = require("kubernetes_validate")
    configs = documented_configs("kubernetes")
    assert len(configs) >= 2
    for data in configs:
        docs = manifests.render(_spec(data), data["deploy"]["image"])
        for m in docs:
            if m.kind != "InferenceService":  # KServe's schema: tests/unit/test_kubernetes_manifests.py
                kv.validate(m.obj, "1.33.0", strict=True)


def test_documented_lepton_config_builds_an_accepted_body() -> None:
    require("leptonai")
    from lepton_ci.deploy import lepton
    from tests.support.lepton_standin import validate_deployment

    (data,) = documented_configs("lepton")
    s = lepton.settings(data["deploy"], data["model"]["name"])
    body = lepton.build_body(_spec(data), data["deploy"]["image"], s, create=True)
    _, problem = validate_deployment(body.model_dump(by_alias=True, exclude_none=True, mode="json"))
    assert problem is None


@pytest.mark.parametrize("target", ["kubernetes", "lepton"])
def test_key_tables_match_the_schema(target: str) -> None:
    keys = set(load_schema()["properties"]["deploy"]["properties"][target]["properties"])
    text = DEPLOY_MD.read_text(encoding="utf-8")
    table = text[text.index(f"| Key (`deploy.{target}.`)"):]
    table = table[:table.index("\n\n")]
    documented = set()
    for row in table.splitlines()[2:]:
        documented |= set(re.findall(r"`([a-z_-]+)`", row.split("|")[1]))
    assert documented == keys
    config_md = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    row = next(line for line in config_md.splitlines() if line.startswith(f"| `deploy.{target}` |"))
    assert set(re.findall(r"`([a-z_]+)`", row.split("|")[4])) >= keys
