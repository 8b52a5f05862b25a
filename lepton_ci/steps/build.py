"""The build step: the serving image of a blessed model version, by a full build or a model-only rebuild.

A version is built only if deploy would deploy it: the same blessing check (a passing gate record signed
by a trusted key, for exactly these files), and the files that go into the image are fetched from the
registry and verified byte for byte by deploy's own functions before anything is built.

Two ways to make the image (docs/build.md):
- full: a Docker Engine builds the image from the Dockerfile template (or `build.dockerfile`), with
  dependencies from a wheelhouse made on this machine; each full build also pushes the image without its
  model as `base-<lepton-ci version>-<framework>-<inputs hash>`;
- model-only (`--on-top-of IMAGE`, and the default when that base tag already exists in `build.image`):
  no daemon; one layer with the model files is appended to the base in the registry (build/append.py).
Either way `.lepton/image.json` records the image by digest, and the record is attached to the version in
the model registry (build/attach.py: versions are immutable, so the record refers to the version).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from lepton_ci import __version__
from lepton_ci.build.append import BASE_TAG_LABEL, ImageName, parse_image
from lepton_ci.build.context import FRAMEWORK_EXTRAS, MODEL_DIR, UID, ImageInputs, pins_from_run, serve_command
from lepton_ci.build.log import BuildLog
from lepton_ci.config import Config
from lepton_ci.errors import StepFailed, UserError
from lepton_ci.oci.reference import TAG_RE
from lepton_ci.records import GateRecord, ImageRecord, ModelVersion, image_record_path
from lepton_ci.registry import open_registry
from lepton_ci.steps.deploy import _served_as, blessing_problem, fetch_verified, resolve_version, trusted_keys
from lepton_ci.timeutil import utcnow

LOCAL_PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"
# The wheelhouse is made with this interpreter, so the default base runs the same minor version of Python
# (a python:3.12 CI job builds on python:3.12-slim).
DEFAULT_BASE_IMAGE = f"python:{LOCAL_PYTHON}-slim"
# `python:3.11-slim`, `docker.io/library/python:3.12`, `mirror.example/python:3.11.7-bookworm`.
_PYTHON_IMAGE = re.compile(r"^(?:.*/)?python:(?P<minor>[0-9]+\.[0-9]+)(?:[.-].*)?$")
LOCAL_REPOSITORY = "lepton-ci/{name}-serve"


def _extras(config: Config, framework: str) -> tuple[str, ...]:
    value = config.section("build").get("extras")
    if value is None:
        return tuple(FRAMEWORK_EXTRAS.get(framework, ["serve"]))
    listed = [value] if isinstance(value, str) else list(value)
    extras = [e.strip() for item in listed for e in str(item).split(",") if e.strip()]
    return tuple(dict.fromkeys(["serve", *extras]))


def _training_pins(section: dict[str, Any], mv: ModelVersion, framework: str) -> tuple[str, ...]:
    """The framework's library versions from the version's own (signed) run record, unless turned off."""
    if section.get("pin_training_versions") is False:
        return ()
    run = mv.metadata.get("run") if isinstance(mv.metadata, dict) else None
    env = run.get("environment") if isinstance(run, dict) else None
    packages = env.get("packages") if isinstance(env, dict) else None
    return pins_from_run(framework, packages) if isinstance(packages, dict) else ()


def _pin_mismatch(pins: tuple[str, ...], label: str) -> tuple[str, str] | None:
    """The first training pin the base image's `ai.lepton.packages` label contradicts, as (wanted, has).

    A package the base does not name at all (a base made before the label existed, or one the framework
    does not install) is not a contradiction; another version of it is."""
    has = dict(p.split("==", 1) for p in label.split() if "==" in p)
    for pin in pins:
        name, version = pin.split("==", 1)
        if name in has and has[name] != version:
            return pin, f"{name}=={has[name]}"
    return None


def _image_tags(mv: ModelVersion, extra: tuple[str, ...] | list[str]) -> list[str]:
    """`v<N>`, `sha-<12 hex of the training commit>` when known, then --tag values."""
    tags = [f"v{mv.version}"]
    sha = str(((mv.run or {}).get("git") or {}).get("sha") or "")
    if len(sha) >= 12 and all(c in "0123456789abcdef" for c in sha):
        tags.append(f"sha-{sha[:12]}")
    for tag in extra:
        if not TAG_RE.fullmatch(tag):
            raise UserError(f"--tag {tag!r} is not a valid image tag (letters, digits, . _ -, at most 128)")
        if tag not in tags:
            tags.append(tag)
    return tags


def model_labels(mv: ModelVersion, base_tag: str) -> dict[str, str]:
    git = (mv.run or {}).get("git") or {}
    return {
        "org.opencontainers.image.title": f"{mv.name} model server",
        "org.opencontainers.image.source": str(git.get("repo") or ""),
        "org.opencontainers.image.revision": str(git.get("sha") or ""),
        "org.opencontainers.image.created": utcnow(),
        "org.opencontainers.image.version": f"v{mv.version}",
        "ai.lepton.model.name": mv.name,
        "ai.lepton.model.version": str(mv.version),
        "ai.lepton.model.digest": mv.digest,
        BASE_TAG_LABEL: base_tag,
    }


def check_base_python(base: str) -> None:
    """A full build installs wheels made here, so an official Python image of another minor version would
    fail deep inside pip: refuse it up front, in one line, instead (a model-only rebuild needs no check)."""
    match = _PYTHON_IMAGE.match(base)
    if match and match["minor"] != LOCAL_PYTHON:
        raise UserError(
            f"build.base_image {base!r} runs Python {match['minor']}, but lepton-ci runs on Python {LOCAL_PYTHON} "
            f"here and the image installs wheels made here: use python:{LOCAL_PYTHON}-slim, or run this job "
            f"with Python {match['minor']}"
        )


def base_labels(inputs: ImageInputs) -> dict[str, str]:
    return {
        "org.opencontainers.image.base.name": inputs.base_image,
        "ai.lepton.ci.version": inputs.lepton_ci,
        "ai.lepton.framework": inputs.framework,
        "ai.lepton.base.inputs": inputs.digest(),
        "ai.lepton.packages": " ".join(inputs.pins),
    }


def _blessed(
    config: Config, ref: str | None, public_keys: tuple[str, ...] | list[str]
) -> tuple[Any, ModelVersion, GateRecord, list[Any]]:
    registry = open_registry(config.registry_url, config.root)
    mv = resolve_version(config, registry, ref)
    keys = trusted_keys(config, public_keys)
    problem = blessing_problem(mv, keys)
    if problem:
        raise StepFailed(f"refusing to build an image of {mv.name} v{mv.version}: {problem}")
    return registry, mv, GateRecord.from_dict(mv.gate, source=f"{mv.name} v{mv.version} gate record"), keys


def build(
    config: Config,
    *,
    ref: str | None = None,
    on_top_of: str | None = None,
    image: str | None = None,
    push: bool | None = None,
    tags: tuple[str, ...] | list[str] = (),
    output: Path | None = None,
    progress: str = "auto",
    public_keys: tuple[str, ...] | list[str] = (),
) -> ImageRecord:
    """Build (and push) the serving image of a blessed version; writes and returns its image.json."""
    section = config.section("build")
    log = BuildLog(progress)
    # --image, then LEPTON_CI_BUILD_IMAGE (a CI variable such as $CI_REGISTRY_IMAGE/serve), then build.image.
    image_value, image_key = image, "--image"
    if not image_value and os.environ.get("LEPTON_CI_BUILD_IMAGE"):
        image_value, image_key = os.environ["LEPTON_CI_BUILD_IMAGE"], "LEPTON_CI_BUILD_IMAGE"
    if not image_value:
        image_value, image_key = section.get("image"), "build.image"
    push = bool(section.get("push", bool(image_value))) if push is None else push
    on_top_of = on_top_of or section.get("on_top_of") or None
    if push and not image_value:
        raise UserError(
            "build.image is not set: name the repository to push to (HOST/REPOSITORY; or --image, "
            "LEPTON_CI_BUILD_IMAGE), or use --no-push",
            where=config.where("build") if "build" in config.data else None,
        )
    if on_top_of and not push:
        raise UserError("--on-top-of builds the image in the registry and always pushes: drop --no-push")
    target = parse_image(image_value, image_key) if image_value else None
    if target is not None and target.reference:
        raise UserError(
            f"{image_key} {image_value!r} names a tag or digest: give the repository only (tags are v<N>, sha-…)"
        )

    registry, mv, gate, keys = _blessed(config, ref, public_keys)
    model_file, framework = _served_as(config, mv, gate)
    model_src = fetch_verified(config, mv, gate, keys)
    inputs = ImageInputs(
        str(section.get("base_image") or DEFAULT_BASE_IMAGE),
        framework,
        _extras(config, framework),
        pins=_training_pins(section, mv, framework),
    )
    image_tags = _image_tags(mv, tags)
    labels = model_labels(mv, inputs.base_tag())
    cmd = serve_command(model_file, framework, mv.name, mv.version)

    if on_top_of is None and target is not None and push and not section.get("dockerfile"):
        on_top_of = _existing_base(target, inputs, log)
    if on_top_of:
        assert target is not None
        record = _model_only(target, on_top_of, mv, model_src, inputs, labels, cmd, image_tags, log)
    else:
        record = _full(config, target, push, mv, model_src, inputs, labels, cmd, image_tags, log)
    record.write(output or image_record_path(config.root))
    if record.pushed:
        from lepton_ci.build.attach import attach_image

        where = attach_image(registry, mv, record.to_dict())
        log.note(f"image record attached to {mv.name} v{mv.version}: {where}")
    return record


def _existing_base(target: ImageName, inputs: ImageInputs, log: BuildLog) -> str | None:
    """The base serving image a full build of the same inputs pushed to `target`, if there is one."""
    from lepton_ci.oci.client import OciClient

    tag = inputs.base_tag()
    if OciClient(target.registry).manifest_digest(target.repository, tag) is None:
        log.note(f"no base image {target.with_reference(tag)} yet: full build")
        return None
    log.note(f"base image {target.with_reference(tag)} exists: model-only rebuild")
    return str(target.with_reference(tag))


def _model_only(
    target: ImageName,
    on_top_of: str,
    mv: ModelVersion,
    model_src: Path,
    inputs: ImageInputs,
    labels: dict[str, str],
    cmd: list[str],
    tags: list[str],
    log: BuildLog,
) -> ImageRecord:
    from lepton_ci.build.append import append_model, read_base
    from lepton_ci.build.layer import model_layer
    from lepton_ci.oci.client import OciClient

    client = OciClient(target.registry)
    name = parse_image(on_top_of, "--on-top-of")
    base_client = client if name.registry == target.registry else OciClient(name.registry)
    base = read_base(name, base_client)
    if "ai.lepton.model.digest" in base.labels:  # a serving image with a model: start from its base
        base_tag = base.labels.get(BASE_TAG_LABEL)
        if not base_tag:
            raise UserError(f"--on-top-of {on_top_of}: the image holds a model and names no base ({BASE_TAG_LABEL})")
        base = read_base(name.with_reference(base_tag), base_client)
    framework = base.labels.get("ai.lepton.framework")
    if framework is None:
        raise UserError(f"--on-top-of {on_top_of}: not a lepton-ci serving base image (no ai.lepton.framework label)")
    if framework != inputs.framework:
        raise UserError(
            f"--on-top-of {on_top_of}: a base for {framework!r} models, this version is {inputs.framework!r}"
        )
    mismatch = _pin_mismatch(inputs.pins, base.labels.get("ai.lepton.packages", ""))
    if mismatch:
        raise UserError(
            f"--on-top-of {on_top_of}: the base image installs {mismatch[1]}, the model was trained with "
            f"{mismatch[0]}: make a full build, or set build.pin_training_versions: false"
        )
    if base.labels.get("ai.lepton.ci.version") != __version__:
        log.note(
            f"the base image serves with lepton-ci {base.labels.get('ai.lepton.ci.version')}, this is {__version__}"
        )
    labels = {
        **labels,
        BASE_TAG_LABEL: base.labels.get(BASE_TAG_LABEL)
        or (base.name.reference if not base.name.reference.startswith("sha256:") else ""),
    }
    with tempfile.TemporaryDirectory(prefix="lepton-layer-") as tmp, log.group(f"model-only rebuild on {base.name}"):
        files = {a["path"]: model_src / a["path"] for a in mv.artifacts}
        layer = model_layer(files, Path(tmp) / "model.tar.gz", MODEL_DIR, UID)
        log.line(f"model layer {layer.digest} ({layer.size:,} bytes)")
        done = append_model(base, target, client, layer, labels, cmd, tags, log)
    return ImageRecord(
        image=f"{target.registry.host}/{target.repository}@{done.digest}",
        digest=done.digest,
        tags=tags,
        mode="model-only",
        base=f"{base.name.registry.host}/{base.name.repository}@{base.digest}",
        model={"name": mv.name, "version": mv.version, "digest": mv.digest},
        lepton_ci=__version__,
        created=utcnow(),
        size_bytes=done.size_bytes,
        pushed_bytes=done.pushed_bytes,
        pushed=True,
    )


def _full(
    config: Config,
    target: ImageName | None,
    push: bool,
    mv: ModelVersion,
    model_src: Path,
    inputs: ImageInputs,
    labels: dict[str, str],
    cmd: list[str],
    tags: list[str],
    log: BuildLog,
) -> ImageRecord:
    from lepton_ci.build import docker_engine
    from lepton_ci.build.context import render_dockerfile, write_context

    section = config.section("build")
    repository = f"{target.registry.host}/{target.repository}" if target else LOCAL_REPOSITORY.format(name=mv.name)
    user_dockerfile = section.get("dockerfile")
    if not user_dockerfile:
        check_base_python(inputs.base_image)
    client = docker_engine.connect()
    if user_dockerfile:
        path = config.resolve(user_dockerfile)
        try:
            dockerfile = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror}", where=config.where("build", "dockerfile")) from None
        dockerfile_name = str(user_dockerfile)
    else:
        dockerfile = render_dockerfile(inputs, base_labels(inputs), labels, cmd)
        dockerfile_name = "Dockerfile (lepton_ci/templates/Dockerfile.j2)"
        docker_engine.ensure_image(client, inputs.base_image, "build.base_image", log)
    base_tag = inputs.base_tag()
    pushed_bytes = 0
    with tempfile.TemporaryDirectory(prefix="lepton-build-") as tmp:
        ctx = Path(tmp)
        with log.group("wheelhouse"):
            write_context(ctx, dockerfile, model_src, mv.artifacts, inputs, log.note)
        with log.group(f"docker build {repository}"):
            if not user_dockerfile:
                docker_engine.build(
                    client, ctx, [f"{repository}:{base_tag}"], log, target="serve-base", dockerfile="Dockerfile"
                )
            try:
                image_id = docker_engine.build(client, ctx, [f"{repository}:{t}" for t in tags], log)
            except UserError as exc:
                raise UserError(exc.message.replace("Dockerfile:", f"{dockerfile_name}:", 1)) from None
    digest = ""
    if push:
        with log.group(f"docker push {repository}"):
            if not user_dockerfile:
                _, sent = docker_engine.push(client, repository, base_tag, log)
                pushed_bytes += sent
            for tag in tags:
                digest, sent = docker_engine.push(client, repository, tag, log)
                pushed_bytes += sent
    size = _pushed_size(target, digest) if push and target else int(client.images.get(image_id).attrs.get("Size") or 0)
    return ImageRecord(
        image=f"{repository}@{digest}" if push else image_id,
        digest=digest or image_id,
        tags=tags,
        mode="full",
        base=f"{repository}:{base_tag}" if not user_dockerfile else f"{dockerfile_name}",
        model={"name": mv.name, "version": mv.version, "digest": mv.digest},
        lepton_ci=__version__,
        created=utcnow(),
        size_bytes=size,
        pushed_bytes=pushed_bytes,
        pushed=push,
    )


def _pushed_size(target: ImageName, digest: str) -> int:
    """Bytes of the pushed image as the registry holds it: compressed layers plus the config."""
    import json

    from lepton_ci.oci.client import OciClient

    got = OciClient(target.registry).get_manifest(target.repository, digest)
    if got is None:
        print(f"lepton-ci: warning: {target}@{digest} is not readable after the push", file=sys.stderr)
        return 0
    manifest = json.loads(got[0])
    return int(manifest["config"]["size"]) + sum(int(x["size"]) for x in manifest.get("layers", []))
