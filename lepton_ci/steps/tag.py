"""The tag step: register a gated run's artifacts as a new immutable version and move aliases.

The gate record must belong to this run (same artifacts digest) and pass, unless `tag.require_gate`
is false; a tag is never created for a model the gate did not see.
"""

from __future__ import annotations

from pathlib import Path

from lepton_ci.config import Config
from lepton_ci.errors import StepFailed, UserError
from lepton_ci.fsutil import atomic_write_json, sha256_file
from lepton_ci.records import GateRecord, RunRecord, artifacts_digest, tagged_version_path
from lepton_ci.registry import PushResult, open_registry


def tag(
    config: Config,
    *,
    run_path: Path | None = None,
    gate_path: Path | None = None,
    aliases: list[str] | None = None,
    reason: str = "",
) -> PushResult:
    section = config.section("tag")
    run_path = run_path or config.run_path
    run = RunRecord.read(run_path)
    if not run.succeeded:
        raise UserError(f"the run in {run_path} did not succeed; nothing to tag")
    if not run.artifacts:
        raise UserError("the run recorded no artifacts; set train.artifacts in lepton.yml", where=config.where("train"))
    metadata: dict = {"run": run.to_dict()}
    gate_path = gate_path or config.gate_path
    require_gate = section.get("require_gate", True)
    if gate_path.is_file():
        gate = GateRecord.read(gate_path)
        if gate.candidate.get("digest") != artifacts_digest(run.artifacts):
            raise UserError(
                f"{gate_path} was written for another run (artifacts digest differs); run `lepton-ci gate` again"
            )
        if require_gate and not gate.passed:
            raise StepFailed("the gate verdict is fail: not tagging (set tag.require_gate: false to register anyway)")
        metadata["gate"] = gate.to_dict()
    elif require_gate:
        raise UserError(f"no gate record at {gate_path}: run `lepton-ci gate` first (or set tag.require_gate: false)")
    files = [(a["path"], config.resolve(a["path"])) for a in run.artifacts]
    for rel, path in files:
        if not path.is_file():
            raise UserError(f"artifact {rel} recorded in {run_path} no longer exists")
    for art, (rel, path) in zip(run.artifacts, files, strict=True):
        if sha256_file(path) != art["sha256"]:
            raise UserError(f"artifact {rel} changed after training (sha256 differs from {run_path})")
    metadata["framework"] = config.framework
    if config.model_file:
        metadata["model_file"] = config.model_file
    registry = open_registry(config.registry_url, config.root, create=True)
    wanted = list(aliases) if aliases is not None else list(section.get("aliases", ["candidate"]))
    result = registry.push(
        config.model_name,
        files,
        metadata,
        aliases=wanted,
        reason=reason or f"tagged from run {run.run_id}",
        sha256={a["path"]: a["sha256"] for a in run.artifacts},  # verified just above
    )
    atomic_write_json(tagged_version_path(config.root), result.version.to_dict())
    return result


def tag_from(
    config: Config,
    source: str,
    *,
    gate_path: Path | None = None,
    aliases: list[str] | None = None,
    reason: str = "",
) -> PushResult:
    """Register the files of an OCI artifact someone else pushed (`oras push`, a ModelKit-style manifest) as
    the next version. Every layer that names a file (`org.opencontainers.image.title` or
    `org.cncf.model.filepath`) is downloaded and checked against its digest before anything is registered.

    The gate rule still holds: with `tag.require_gate` (the default) a gate record whose candidate is exactly
    these files must be given, because an import is otherwise a model no gate has judged."""
    import tempfile

    from lepton_ci.oci.pull import pull_artifact

    section = config.section("tag")
    with tempfile.TemporaryDirectory(prefix="lepton-import-") as tmp:
        pulled = pull_artifact(source, Path(tmp))
        digest = artifacts_digest(pulled.artifacts)
        metadata: dict = {"source": {"oci": source, "manifest_digest": pulled.manifest_digest}}
        gate_path = gate_path or config.gate_path
        if gate_path.is_file():
            gate = GateRecord.read(gate_path)
            if gate.candidate.get("digest") != digest:
                raise UserError(f"{gate_path} judged other files than {source} holds (artifacts digest differs)")
            if section.get("require_gate", True) and not gate.passed:
                raise StepFailed("the gate verdict is fail: not tagging")
            metadata["gate"] = gate.to_dict()
        elif section.get("require_gate", True):
            raise UserError(
                f"tag --from registers files no gate has judged: give --gate with a gate record of exactly the files "
                f"of {source}, or set tag.require_gate: false to import without one (deploy then needs "
                "--allow-unblessed)",
                where=config.where("tag"),
            )
        metadata["framework"] = config.framework
        paths = [a["path"] for a in pulled.artifacts]
        if config.model_file and config.model_file in paths:
            metadata["model_file"] = config.model_file
        registry = open_registry(config.registry_url, config.root, create=True)
        wanted = list(aliases) if aliases is not None else list(section.get("aliases", ["candidate"]))
        files = [(a["path"], Path(tmp) / a["path"]) for a in pulled.artifacts]
        result = registry.push(
            config.model_name, files, metadata, aliases=wanted, reason=reason or f"imported from {source}"
        )
    atomic_write_json(tagged_version_path(config.root), result.version.to_dict())
    return result
