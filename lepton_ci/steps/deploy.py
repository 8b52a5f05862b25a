"""The deploy step: refuse unblessed models, verify the bytes, hand them to a target, move the alias.

Blessed means: the version carries a gate record whose signature verifies with a trusted public key,
whose verdict is pass, and whose candidate digest equals the digest recomputed from the version's
artifact entries. Then, before any target sees the files (and so before anything is unpickled), the
files about to be served are hashed from disk — fresh from the registry or reused from the deploy
cache alike — and must be exactly the signed set: same paths, same sha256, nothing extra, and the
OpenSSF model-signing signature over them must verify. `--allow-unblessed` skips only the gate checks
(the bytes are still checked against the version's manifest) and is recorded in deployment.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lepton_ci import signing
from lepton_ci.config import Config
from lepton_ci.deploy.base import COPY_PREFIX, DeployFailed, DeploySpec, get_target
from lepton_ci.errors import StepFailed, TrustError, UserError
from lepton_ci.fsutil import exclusive_lock, sha256_file, short_repr
from lepton_ci.records import (
    Deployment,
    GateRecord,
    ImageRecord,
    ModelVersion,
    artifacts_digest,
    image_record_path,
    read_tagged_version,
    safe_relative_path,
)
from lepton_ci.registry import open_registry

LOCK_TIMEOUT_S = 600.0


def trusted_keys(config: Config, explicit: tuple[str, ...] | list[str] = ()) -> list[signing.PublicKey]:
    """The public keys a blessing may carry: --public-key, LEPTON_CI_PUBLIC_KEY, signing.public_key."""
    value = config.section("signing").get("public_key")
    values = [value] if isinstance(value, str) else list(value or [])
    return signing.trusted_keys(
        explicit=explicit,
        config_values=values,
        base_dir=config.root,
        config_source=f"signing.public_key ({config.where('signing', 'public_key')})",
    )


def blessing_problem(mv: ModelVersion, keys: list[signing.PublicKey]) -> str | None:
    """Why this version may not be deployed, or None when its gate record blesses exactly its artifacts."""
    if not mv.gate:
        return "it has no gate record (it was tagged without `lepton-ci gate`)"
    try:
        gate = GateRecord.from_dict(mv.gate, source=f"{mv.name} v{mv.version} gate record")
    except UserError as exc:
        return f"its gate record is malformed ({exc.message})"
    ok, reason = signing.verify(gate, keys)
    if not ok:
        return reason
    if gate.model != mv.name:
        return f"its gate record blesses model {gate.model!r}, not {mv.name!r}"
    if not gate.passed:
        failed = [f"{r.get('metric')} {r.get('rule')}" for r in gate.results if not r.get("passed")]
        return f"its gate verdict is fail ({', '.join(failed) or 'no passing rule'})"
    recomputed = artifacts_digest(mv.artifacts)
    if gate.candidate.get("digest") != recomputed:
        return "its gate record was written for other artifacts (the signed digest differs from the version's files)"
    if mv.artifacts_digest != recomputed:
        return "its manifest's artifacts digest does not match its artifact entries"
    if not (gate.signature.get("model_signature") or {}).get("bundle"):
        return "its gate record has no model-signing signature over the files"
    return None


def _hash_tree(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under root by relative path: (sha256, size). Symlinks, devices and sockets are refused:
    the server must load bytes that were hashed, not whatever a link points at later."""
    found: dict[str, tuple[str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in dirnames + filenames:
            p = base / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                raise TrustError(f"{rel} is a symbolic link")
            if name in filenames:
                if not p.is_file():
                    raise TrustError(f"{rel} is not a regular file")
                found[rel] = (sha256_file(p), p.stat().st_size)
    return found


def verify_model_files(
    model_dir: Path, mv: ModelVersion, gate: GateRecord | None, keys: list[signing.PublicKey]
) -> str | None:
    """None when the files under model_dir are exactly the version's (and, with a gate, the signed) set."""
    try:
        found = _hash_tree(model_dir)
    except (TrustError, OSError) as exc:
        return f"the files to serve cannot be verified: {exc}"
    expected = {a["path"]: (a["sha256"], a.get("size")) for a in mv.artifacts}
    extra = sorted(set(found) - set(expected))
    missing = sorted(set(expected) - set(found))
    if extra or missing:
        what = ", ".join([f"unexpected {p}" for p in extra[:3]] + [f"missing {p}" for p in missing[:3]])
        return f"the files to serve are not the version's files ({what})"
    for path, (digest, size) in expected.items():
        if found[path][0] != digest or (size is not None and found[path][1] != size):
            return f"{path} does not match its digest in the version manifest"
    if gate is None:
        return None
    computed = artifacts_digest([{"path": p, "sha256": d} for p, (d, _) in found.items()])
    if computed != gate.candidate.get("digest"):
        return "the files to serve are not the files the gate signed"
    key = signing.signing_key_for(gate, keys)
    if key is None:
        return "no trusted key for the model signature"
    return signing.verify_model_dir(model_dir, (gate.signature.get("model_signature") or {}).get("bundle"), key)


def _state_dir(config: Config) -> Path:
    return config.deployment_path.parent / "deploy"


def fetch_verified(config: Config, mv: ModelVersion, gate: GateRecord | None, keys: list[signing.PublicKey]) -> Path:
    """The version's files in the deploy cache, verified now. A cache entry that fails verification
    (tampered, pre-seeded, half-written) is discarded and fetched again; a fresh fetch that fails is a
    refusal."""
    dest = _state_dir(config) / "models" / mv.name / f"v{mv.version}-{mv.digest.split(':')[-1][:16]}"
    if dest.is_dir() or dest.is_symlink():
        problem = verify_model_files(dest, mv, gate, keys) if not dest.is_symlink() else "the cache entry is a link"
        if problem is None:
            return dest
        print(
            f"lepton-ci: warning: discarding the deploy cache for {mv.name} v{mv.version}: {problem}", file=sys.stderr
        )
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        else:
            shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".fetch-"))
    try:
        open_registry(config.registry_url, config.root).fetch(mv.name, mv.version, tmp)
        problem = verify_model_files(tmp, mv, gate, keys)
        if problem is not None:
            raise TrustError(f"refusing to deploy {mv.name} v{mv.version}: {problem}")
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _served_as(config: Config, mv: ModelVersion, gate: GateRecord | None) -> tuple[str, str]:
    """(model file, framework) the server loads. For a blessed version both come from the signed gate
    record, and the version's (unsigned) metadata must agree: whoever can write the registry must not be
    able to make the server load another of the files, or load it with another loader."""
    if gate is None:
        return _model_file(config, mv, mv.metadata.get("model_file")), mv.metadata.get("framework") or config.framework
    signed_file, signed_framework = gate.candidate.get("model_file"), gate.candidate.get("framework")
    for key, signed in (("model_file", signed_file), ("framework", signed_framework)):
        stored = mv.metadata.get(key)
        if stored is not None and signed is not None and stored != signed:
            raise TrustError(
                f"refusing to deploy {mv.name} v{mv.version}: its metadata names {key} {short_repr(stored)}, "
                f"but the gate blessed {short_repr(signed)}"
            )
    # Only signed values choose: with no signed model file the version must hold exactly one file, and
    # with no signed framework the config's applies (unsigned metadata never decides either).
    if signed_file is None and len(mv.artifacts) != 1:
        raise TrustError(
            f"refusing to deploy {mv.name} v{mv.version}: it has several files and its gate record does not say "
            "which one the server loads (set model.file in lepton.yml and run the gate again)"
        )
    return _model_file(config, mv, signed_file or mv.artifacts[0]["path"]), signed_framework or config.framework


def private_copy(verified: Path, mv: ModelVersion) -> Path:
    """A copy of the verified files that only this user can reach, checked again while copying, for the
    server to load. The deploy cache sits in the workspace, which others (a shared runner directory, a
    pull request's build step) may be able to write: files checked there could be swapped before the
    server, a separate process, gets to read them. The copy lives in a fresh 0700 directory under the
    system temp dir (sticky), so another user can neither change nor rename it."""
    import hashlib

    root = Path(tempfile.mkdtemp(prefix=COPY_PREFIX))
    try:
        for art in mv.artifacts:
            dest = root / art["path"]
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            h = hashlib.sha256()
            fd = os.open(verified / art["path"], os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as src, open(dest, "xb") as out:
                while chunk := src.read(1 << 20):
                    h.update(chunk)
                    out.write(chunk)
            if h.hexdigest() != art["sha256"]:
                raise TrustError(
                    f"refusing to deploy {mv.name} v{mv.version}: {art['path']} changed while it was copied"
                )
            os.chmod(dest, 0o400)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return root


def _model_file(config: Config, mv: ModelVersion, name: Any) -> str:
    """The artifact the server loads: it must be one of the version's own (verified) files."""
    name = name or config.model_file
    if not name and len(mv.artifacts) == 1:
        name = mv.artifacts[0]["path"]
    if not name:
        raise UserError(
            "the version has several artifacts; set model.file in lepton.yml to the one the server loads",
            where=config.where("model"),
        )
    if not isinstance(name, str) or not safe_relative_path(name) or name not in {a["path"] for a in mv.artifacts}:
        raise TrustError(
            f"refusing to deploy {mv.name} v{mv.version}: model file {str(name)[:80]!r} is not one of "
            "the version's artifacts"
        )
    return name


@contextlib.contextmanager
def deployment_lock(config: Config) -> Iterator[None]:
    """One deploy, stop, status or rollback at a time per deployment.json (read-modify-write)."""
    path = config.deployment_path.with_name(config.deployment_path.name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    busy = lambda: UserError(f"{config.deployment_path} is locked by another deploy")  # noqa: E731
    with open(path, "a+") as f, exclusive_lock(f, LOCK_TIMEOUT_S, busy, poll_s=0.1):
        yield


def current_deployment(config: Config) -> Deployment | None:
    path = config.deployment_path
    return Deployment.read(path) if path.is_file() else None


def _recorded_deployment(config: Config) -> Deployment:
    current = current_deployment(config)
    if current is None:
        raise UserError(f"no deployment recorded at {config.deployment_path}")
    return current


def _smoke_request(config: Config) -> dict[str, Any] | None:
    rel = config.section("deploy").get("smoke_request")
    if not rel:
        return None
    path = config.resolve(rel)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"smoke request file not found: {rel}", where=config.where("deploy", "smoke_request")) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(
            f"smoke request {rel} is not valid JSON: {exc}", where=config.where("deploy", "smoke_request")
        ) from None


def deploy(
    config: Config,
    *,
    ref: str | None = None,
    allow_unblessed: bool = False,
    move_alias: bool = True,
    reason: str = "",
    public_keys: tuple[str, ...] | list[str] = (),
    render_only: str | None = None,
) -> Deployment:
    """`render_only`: "" or a directory (--render-only [DIR]) writes the kubernetes manifests instead of
    applying them, whatever deploy.kubernetes.render_only says."""
    with deployment_lock(config):
        return _deploy(
            config,
            ref=ref,
            allow_unblessed=allow_unblessed,
            move_alias=move_alias,
            reason=reason,
            public_keys=public_keys,
            render_only=render_only,
        )


def target_options(config: Config, render_only: str | None = None) -> dict[str, Any]:
    """The `deploy` section as a target gets it: paths in it made absolute (a target does not know where
    lepton.yml is) and --render-only applied. `render_only: true` writes to `manifests/` beside
    deployment.json; a directory in lepton.yml is relative to lepton.yml, one on the command line to the
    working directory."""
    options = config.section("deploy")
    if render_only is not None and options.get("target", "local") != "kubernetes":
        raise UserError(f"--render-only needs deploy.target kubernetes, not {options.get('target', 'local')!r}")
    k = dict(options.get("kubernetes") or {})
    if render_only is not None:
        value: Any = str(Path(render_only).resolve()) if render_only else True
    else:
        value = k.get("render_only", False)
        value = str(config.resolve(value)) if isinstance(value, str) else value
    k["render_only"] = str(config.deployment_path.parent / "manifests") if value is True else value
    options["kubernetes"] = k
    return options


def resolve_version(config: Config, registry: Any, ref: str | None) -> ModelVersion:
    """The version `ref` names (a number, alias, digest or `latest`); without one, the version the last
    `lepton-ci tag` wrote to .lepton/version.json."""
    if ref is None:
        tagged = read_tagged_version(config.root)
        if tagged is None:
            raise UserError("no version given and no .lepton/version.json from `lepton-ci tag`: pass --version REF")
        ref = str(tagged.version)
    mv: ModelVersion = registry.get(config.model_name, ref)
    return mv


def built_image(config: Config, mv: ModelVersion) -> str | None:
    """The pushed image `lepton-ci build` made of exactly this version in this workspace (.lepton/image.json),
    for the image-based targets; None when there is none (they take deploy.image)."""
    path = image_record_path(config.root)
    if not path.is_file():
        return None
    record = ImageRecord.read(path)
    if not record.pushed or record.model.get("digest") != mv.digest:
        return None  # a local-only image, or one built of another version
    return record.image


def _deploy(
    config: Config,
    *,
    ref: str | None,
    allow_unblessed: bool,
    move_alias: bool,
    reason: str,
    public_keys: tuple[str, ...] | list[str],
    render_only: str | None = None,
) -> Deployment:
    section = target_options(config, render_only)
    registry = open_registry(config.registry_url, config.root)
    mv = resolve_version(config, registry, ref)
    keys = trusted_keys(config, public_keys)
    problem = blessing_problem(mv, keys)
    if problem and not allow_unblessed:
        raise StepFailed(f"refusing to deploy {mv.name} v{mv.version}: {problem} (use --allow-unblessed to override)")
    gate = None if problem else GateRecord.from_dict(mv.gate, source=f"{mv.name} v{mv.version} gate record")
    model_file, framework = _served_as(config, mv, gate)
    target = get_target(section.get("target", "local"))
    spec = DeploySpec(
        version=mv,
        model_dir=private_copy(fetch_verified(config, mv, gate, keys), mv),
        private_copy=True,
        model_file=model_file,
        framework=framework,
        options=section,
        state_dir=_state_dir(config),
        smoke_request=_smoke_request(config),
        image=built_image(config, mv),
    )
    current = current_deployment(config)
    try:
        record = target.deploy(spec, current)
    except BaseException as exc:
        if spec.model_dir is not None:  # a target that did not start keeps no copy of the files
            shutil.rmtree(spec.model_dir, ignore_errors=True)
        if isinstance(exc, DeployFailed):
            exc.deployment.write(config.deployment_path.with_name("deployment.failed.json"))
        raise
    if problem:
        record.extra["unblessed"] = problem
    record.write(config.deployment_path)
    alias = section.get("alias", "production")
    # Rendered manifests run nowhere yet (a GitOps tool applies them later): the alias keeps naming what runs.
    if record.status == "rendered":
        return record
    if move_alias and alias and registry.aliases(mv.name).get(alias) != mv.version:
        registry.move_alias(
            mv.name, alias, mv.version, reason=reason or f"deployed to {target.name} at {record.endpoint}"
        )
    return record


def status(config: Config) -> Deployment:
    with deployment_lock(config):
        current = _recorded_deployment(config)
        refreshed = get_target(current.target).status(current)
        refreshed.write(config.deployment_path)
        return refreshed


def stop(config: Config) -> Deployment:
    with deployment_lock(config):
        current = _recorded_deployment(config)
        stopped = get_target(current.target).stop(current)
        stopped.write(config.deployment_path)
        return stopped


def rollback(
    config: Config, *, allow_unblessed: bool = False, public_keys: tuple[str, ...] | list[str] = ()
) -> Deployment:
    """Deploy the previous version again (verified like any deploy) and move the alias back to it."""
    with deployment_lock(config):
        current = _recorded_deployment(config)
        if not current.previous:
            raise UserError(f"{current.model} v{current.version} has no previous deployment to roll back to")
        previous_version = current.previous["version"]
        record = _deploy(
            config,
            ref=str(previous_version),
            move_alias=False,
            allow_unblessed=allow_unblessed,
            reason="",
            public_keys=public_keys,
        )
        alias = config.section("deploy").get("alias", "production")
        registry = open_registry(config.registry_url, config.root)
        if alias and record.status != "rendered" and registry.aliases(record.model).get(alias) != previous_version:
            registry.move_alias(
                record.model, alias, previous_version, reason=f"deploy rollback from v{current.version}"
            )
        return record
