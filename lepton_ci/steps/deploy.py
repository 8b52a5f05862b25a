"""The deploy step: refuse unblessed models, hand a fetched version to a target, move the alias.

Blessed means: the version carries a gate record whose verdict is pass, whose signature verifies with
LEPTON_CI_SIGNING_KEY, and whose candidate digest is this version's artifacts digest. `--allow-unblessed`
is the explicit, logged escape hatch.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lepton_ci import signing
from lepton_ci.config import Config
from lepton_ci.deploy.base import DeployFailed, DeploySpec, get_target
from lepton_ci.errors import StepFailed, UserError
from lepton_ci.records import Deployment, GateRecord, ModelVersion
from lepton_ci.registry import open_registry
from lepton_ci.steps.tag import read_tagged_version


def blessing_problem(mv: ModelVersion, key: bytes | None) -> str | None:
    """Why this version may not be deployed, or None when it is blessed."""
    if not mv.gate:
        return "it has no gate record (it was tagged without `lepton-ci gate`)"
    gate = GateRecord.from_dict(mv.gate, source=f"{mv.name} v{mv.version} gate record")
    if not gate.passed:
        failed = [r["metric"] + " " + r["rule"] for r in gate.results if not r["passed"]]
        return f"its gate verdict is fail ({', '.join(failed)})"
    if gate.candidate.get("digest") != mv.artifacts_digest:
        return "its gate record was written for other artifacts (digest mismatch)"
    ok, reason = signing.verify(gate, signing.signing_key())
    return None if ok else reason


def _state_dir(config: Config) -> Path:
    return config.deployment_path.parent / "deploy"


def _fetch(config: Config, mv: ModelVersion) -> Path:
    registry = open_registry(config.registry_url, config.root)
    dest = _state_dir(config) / "models" / mv.name / f"v{mv.version}-{mv.digest.split(':')[-1][:12]}"
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".fetch-"))
    try:
        registry.fetch(mv.name, mv.version, tmp)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _model_file(config: Config, mv: ModelVersion) -> str:
    name = mv.metadata.get("model_file") or config.model_file
    if name:
        return name
    if len(mv.artifacts) == 1:
        return mv.artifacts[0]["path"]
    raise UserError("the version has several artifacts; set model.file in lepton.yml to the one the server loads",
                    where=config.where("model"))


def current_deployment(config: Config) -> Deployment | None:
    path = config.deployment_path
    return Deployment.read(path) if path.is_file() else None


def _smoke_request(config: Config) -> dict[str, Any] | None:
    rel = config.section("deploy").get("smoke_request")
    if not rel:
        return None
    path = config.resolve(rel)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"smoke request file not found: {rel}", where=config.where("deploy", "smoke_request")) from None
    except json.JSONDecodeError as exc:
        raise UserError(f"smoke request {rel} is not valid JSON: {exc}", where=config.where("deploy", "smoke_request")) from None


def deploy(config: Config, *, ref: str | None = None, allow_unblessed: bool = False,
           move_alias: bool = True, reason: str = "") -> Deployment:
    section = config.section("deploy")
    registry = open_registry(config.registry_url, config.root)
    if ref is None:
        tagged = read_tagged_version(config)
        if tagged is None:
            raise UserError("no version given and no .lepton/version.json from `lepton-ci tag`: pass --version REF")
        ref = str(tagged.version)
    mv = registry.get(config.model_name, ref)
    problem = blessing_problem(mv, signing.signing_key())
    if problem and not allow_unblessed:
        raise StepFailed(f"refusing to deploy {mv.name} v{mv.version}: {problem} (use --allow-unblessed to override)")
    target = get_target(section.get("target", "local"))
    spec = DeploySpec(version=mv, model_dir=_fetch(config, mv), model_file=_model_file(config, mv),
                      framework=mv.metadata.get("framework") or config.framework, options=section,
                      state_dir=_state_dir(config), smoke_request=_smoke_request(config))
    current = current_deployment(config)
    try:
        record = target.deploy(spec, current)
    except DeployFailed as exc:
        exc.deployment.write(config.deployment_path.with_name("deployment.failed.json"))
        raise
    if problem:
        record.extra["unblessed"] = problem
    record.write(config.deployment_path)
    alias = section.get("alias", "production")
    if move_alias and alias and registry.aliases(mv.name).get(alias) != mv.version:
        registry.move_alias(mv.name, alias, mv.version, reason=reason or f"deployed to {target.name} at {record.endpoint}")
    return record


def status(config: Config) -> Deployment:
    current = current_deployment(config)
    if current is None:
        raise UserError(f"no deployment recorded at {config.deployment_path}")
    refreshed = get_target(current.target).status(current)
    refreshed.write(config.deployment_path)
    return refreshed


def stop(config: Config) -> Deployment:
    current = current_deployment(config)
    if current is None:
        raise UserError(f"no deployment recorded at {config.deployment_path}")
    stopped = get_target(current.target).stop(current)
    stopped.write(config.deployment_path)
    return stopped


def rollback(config: Config, *, allow_unblessed: bool = False) -> Deployment:
    """Deploy the previous version again and move the alias back to it."""
    current = current_deployment(config)
    if current is None:
        raise UserError(f"no deployment recorded at {config.deployment_path}")
    if not current.previous:
        raise UserError(f"{current.model} v{current.version} has no previous deployment to roll back to")
    previous_version = current.previous["version"]
    record = deploy(config, ref=str(previous_version), move_alias=False, allow_unblessed=allow_unblessed)
    alias = config.section("deploy").get("alias", "production")
    registry = open_registry(config.registry_url, config.root)
    if alias and registry.aliases(record.model).get(alias) != previous_version:
        registry.move_alias(record.model, alias, previous_version, reason=f"deploy rollback from v{current.version}")
    return record
