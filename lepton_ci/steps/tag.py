"""The tag step: register a gated run's artifacts as a new immutable version and move aliases.

The gate record must belong to this run (same artifacts digest) and pass, unless `tag.require_gate`
is false; a tag is never created for a model the gate did not see.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lepton_ci.config import Config
from lepton_ci.errors import StepFailed, UserError
from lepton_ci.fsutil import atomic_write_json, sha256_file
from lepton_ci.records import GateRecord, RunRecord, artifacts_digest, tagged_version_path
from lepton_ci.registry import PushResult, open_registry


def _require_gate(config: Config) -> bool:
    return bool(config.section("tag").get("require_gate", True))


def _gate_metadata(config: Config, gate_path: Path, digest: str, other_files: str) -> dict[str, Any] | None:
    """The gate record at `gate_path`, as version metadata, if it blesses exactly the files of `digest`;
    None when there is no record (the caller says what that means for it). `other_files` says, for this
    caller, what a record of other files means."""
    if not gate_path.is_file():
        return None
    gate = GateRecord.read(gate_path)
    if gate.candidate.get("digest") != digest:
        raise UserError(f"{gate_path} {other_files}")
    if _require_gate(config) and not gate.passed:
        raise StepFailed("the gate verdict is fail: not tagging (set tag.require_gate: false to register anyway)")
    return gate.to_dict()


def _register(
    config: Config,
    files: list[tuple[str, Path]],
    sha256: dict[str, str],
    metadata: dict[str, Any],
    model_file: str | None,
    aliases: list[str] | None,
    reason: str,
) -> PushResult:
    """Push verified files (`sha256`: their digests) as the next version and write .lepton/version.json."""
    metadata["framework"] = config.framework
    if model_file:
        metadata["model_file"] = model_file
    registry = open_registry(config.registry_url, config.root, create=True)
    wanted = list(aliases) if aliases is not None else list(config.section("tag").get("aliases", ["candidate"]))
    result = registry.push(config.model_name, files, metadata, aliases=wanted, reason=reason, sha256=sha256)
    atomic_write_json(tagged_version_path(config.root), result.version.to_dict())
    return result


def tag(
    config: Config,
    *,
    run_path: Path | None = None,
    gate_path: Path | None = None,
    aliases: list[str] | None = None,
    reason: str = "",
) -> PushResult:
    run_path = run_path or config.run_path
    run = RunRecord.read(run_path)
    if not run.succeeded:
        raise UserError(f"the run in {run_path} did not succeed; nothing to tag")
    if not run.artifacts:
        raise UserError("the run recorded no artifacts; set train.artifacts in lepton.yml", where=config.where("train"))
    metadata: dict[str, Any] = {"run": run.to_dict()}
    gate_path = gate_path or config.gate_path
    gate = _gate_metadata(
        config,
        gate_path,
        artifacts_digest(run.artifacts),
        "was written for another run (artifacts digest differs); run `lepton-ci gate` again",
    )
    if gate is not None:
        metadata["gate"] = gate
    elif _require_gate(config):
        raise UserError(f"no gate record at {gate_path}: run `lepton-ci gate` first (or set tag.require_gate: false)")
    files = [(a["path"], config.resolve(a["path"])) for a in run.artifacts]
    for rel, path in files:
        if not path.is_file():
            raise UserError(f"artifact {rel} recorded in {run_path} no longer exists")
    for art, (rel, path) in zip(run.artifacts, files, strict=True):
        if sha256_file(path) != art["sha256"]:
            raise UserError(f"artifact {rel} changed after training (sha256 differs from {run_path})")
    verified = {a["path"]: a["sha256"] for a in run.artifacts}
    reason = reason or f"tagged from run {run.run_id}"
    return _register(config, files, verified, metadata, config.model_file, aliases, reason)


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

    with tempfile.TemporaryDirectory(prefix="lepton-import-") as tmp:
        pulled = pull_artifact(source, Path(tmp))
        metadata: dict[str, Any] = {"source": {"oci": source, "manifest_digest": pulled.manifest_digest}}
        gate = _gate_metadata(
            config,
            gate_path or config.gate_path,
            artifacts_digest(pulled.artifacts),
            f"judged other files than {source} holds (artifacts digest differs)",
        )
        if gate is not None:
            metadata["gate"] = gate
        elif _require_gate(config):
            raise UserError(
                f"tag --from registers files no gate has judged: give --gate with a gate record of exactly the files "
                f"of {source}, or set tag.require_gate: false to import without one (deploy then needs "
                "--allow-unblessed)",
                where=config.where("tag"),
            )
        files = [(a["path"], Path(tmp) / a["path"]) for a in pulled.artifacts]
        verified = {a["path"]: a["sha256"] for a in pulled.artifacts}  # pull_artifact checked every digest
        model_file = config.model_file if config.model_file in verified else None
        reason = reason or f"imported from {source}"
        return _register(config, files, verified, metadata, model_file, aliases, reason)
