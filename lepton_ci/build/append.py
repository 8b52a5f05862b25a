"""The model-only rebuild: a new serving image made in the registry, without a Docker Engine.

A serving base image (the model server and its dependencies, no model) is already in the registry; this
appends one layer holding the model files (`layer.py`), writes a new image config (the layer's diff ID, a
history entry, the model's labels, the command that serves it) and a new manifest. Only the model layer,
the config and the manifest travel: the base's layers are referenced (or mounted from the base's
repository on the same registry), never uploaded again.

Interruption-safe by order: every blob is pushed before any manifest, and each tag is one manifest PUT of a
complete image, so a build killed at any point leaves either no new tag or a complete image; running it
again finishes the job (blobs already there are not sent again).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lepton_ci.build.layer import GZIP_LAYER_DOCKER, GZIP_LAYER_OCI, Layer
from lepton_ci.build.log import BuildLog
from lepton_ci.errors import RegistryError, UserError
from lepton_ci.oci.client import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, OciClient, digest_bytes, sha256_file
from lepton_ci.oci.reference import TAG_RE, RegistryRef, parse_oci_url
from lepton_ci.timeutil import utcnow

DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
CONFIG_LIMIT = 4 * 1024 * 1024
BASE_TAG_LABEL = "ai.lepton.base.tag"


@dataclass(frozen=True)
class ImageName:
    """`HOST[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST]`, with the registry named explicitly."""

    registry: RegistryRef
    repository: str
    reference: str  # a tag or a digest; "" when none was given

    def __str__(self) -> str:
        sep = "@" if self.reference.startswith("sha256:") else ":"
        return f"{self.registry.host}/{self.repository}" + (f"{sep}{self.reference}" if self.reference else "")

    def with_reference(self, reference: str) -> ImageName:
        return ImageName(self.registry, self.repository, reference)


def parse_image(text: str, what: str) -> ImageName:
    """An image name as docker writes it; the registry host is required (there is no implicit docker.io)."""
    name, digest = text, ""
    if "@" in text:
        name, _, digest = text.partition("@")
        if not digest.startswith("sha256:") or len(digest) != 71:
            raise UserError(f"{what} {text!r}: the digest after @ must be sha256:<64 hex>")
    host, slash, rest = name.partition("/")
    if not slash or not ("." in host or ":" in host or host == "localhost"):
        raise UserError(f"{what} {text!r}: expected HOST[:PORT]/REPOSITORY[:TAG] with the registry host named")
    repository, tag = rest, ""
    if ":" in rest.rsplit("/", 1)[-1]:
        repository, _, tag = rest.rpartition(":")
        if not TAG_RE.fullmatch(tag):
            raise UserError(f"{what} {text!r}: {tag!r} is not a valid tag")
    try:
        ref = parse_oci_url(f"oci://{host}/{repository}")
    except UserError as exc:
        raise UserError(f"{what} {text!r}: {exc.message}") from None
    return ImageName(ref, ref.repository, digest or tag)


@dataclass
class BaseImage:
    """A base image as read from its registry: its manifest (one platform), its config, and where it lives."""

    name: ImageName
    client: OciClient
    manifest: dict[str, Any]
    media_type: str
    digest: str
    config: dict[str, Any]

    @property
    def labels(self) -> dict[str, str]:
        return dict((self.config.get("config") or {}).get("Labels") or {})


def _platform_entry(index: dict[str, Any], where: str) -> dict[str, Any]:
    entries = [m for m in index.get("manifests") or [] if isinstance(m, dict)]
    for m in entries:
        p = m.get("platform") or {}
        if p.get("os") == "linux" and p.get("architecture") == "amd64":
            return m
    if not entries:
        raise RegistryError(f"{where} is an empty image index")
    return entries[0]


def read_base(name: ImageName, client: OciClient) -> BaseImage:
    """The image's manifest and config; a name that is not there is one line."""
    where = str(name)
    got = client.get_manifest(name.repository, name.reference or "latest")
    if got is None:
        raise UserError(f"base image {where} does not exist in the registry")
    data, media, digest = got
    manifest = json.loads(data)
    media = media or manifest.get("mediaType", "")
    if media in (OCI_INDEX, DOCKER_LIST):
        entry = _platform_entry(manifest, where)
        got = client.get_manifest(name.repository, entry["digest"])
        if got is None:
            raise RegistryError(f"{where}: the index names {entry['digest'][:19]}, which the registry does not hold")
        data, media, digest = got
        manifest = json.loads(data)
        media = media or manifest.get("mediaType", "")
    if media not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise UserError(f"base image {where} is not an image manifest ({media or 'no media type'})")
    raw = client.read_blob(name.repository, manifest["config"]["digest"], CONFIG_LIMIT)
    if raw is None:
        raise RegistryError(f"{where}: its config blob is missing from the registry")
    return BaseImage(name, client, manifest, media, digest, json.loads(raw))


def _ensure_blobs(base: BaseImage, target: ImageName, client: OciClient, log: BuildLog) -> int:
    """Make the base's layers present in the target repository; returns the bytes that had to be copied
    (0 within one repository, or when the registry mounts them)."""
    if base.name.registry.host == target.registry.host and base.name.repository == target.repository:
        return 0
    copied = 0
    for desc in base.manifest.get("layers") or []:
        digest, size = desc["digest"], int(desc["size"])
        if client.blob_size(target.repository, digest) == size:
            continue
        if base.name.registry.host == target.registry.host and client.mount_blob(
            target.repository, digest, base.name.repository
        ):
            continue
        log.note(f"copying base layer {digest[:19]} ({size:,} bytes) into {target.repository}")
        stream = base.client.open_blob(base.name.repository, digest)
        if stream is None:
            raise RegistryError(f"base image {base.name}: layer {digest[:19]} is missing from the registry")
        with tempfile.NamedTemporaryFile(prefix="lepton-layer-") as tmp, stream:
            while chunk := stream.read(1 << 20):
                tmp.write(chunk)
            tmp.flush()
            if sha256_file(Path(tmp.name))[0] != digest:
                raise RegistryError(f"base image {base.name}: layer {digest[:19]} does not match its digest")
            client.push_blob(target.repository, Path(tmp.name), digest, size)
        copied += size
    return copied


@dataclass
class Appended:
    digest: str
    pushed_bytes: int
    size_bytes: int


def new_config(base: BaseImage, layer: Layer, labels: dict[str, str], cmd: list[str], created: str) -> dict[str, Any]:
    """The base's config with the model layer, labels, command and history added."""
    config = json.loads(json.dumps(base.config))
    inner = config.setdefault("config", {})
    inner["Labels"] = {**(inner.get("Labels") or {}), **labels}
    inner["Cmd"] = list(cmd)
    config.setdefault("rootfs", {"type": "layers", "diff_ids": []}).setdefault("diff_ids", []).append(layer.diff_id)
    history = config.setdefault("history", [])
    history.append({"created": created, "created_by": "lepton-ci build: COPY model files", "comment": "model-only"})
    history.append(
        {"created": created, "created_by": f"lepton-ci build: LABEL ...; CMD {json.dumps(cmd)}", "empty_layer": True}
    )
    config["created"] = created
    return config


def append_model(
    base: BaseImage,
    target: ImageName,
    client: OciClient,
    layer: Layer,
    labels: dict[str, str],
    cmd: list[str],
    tags: list[str],
    log: BuildLog,
) -> Appended:
    """Push the model layer, the new config, then the manifest under each tag (last)."""
    pushed = _ensure_blobs(base, target, client, log)
    if client.push_blob(target.repository, layer.path, layer.digest, layer.size):
        pushed += layer.size
    docker = base.media_type == DOCKER_MANIFEST
    config_bytes = json.dumps(new_config(base, layer, labels, cmd, utcnow()), separators=(",", ":")).encode()
    config_digest = digest_bytes(config_bytes)
    if client.blob_size(target.repository, config_digest) != len(config_bytes):
        client.push_bytes(target.repository, config_bytes, "image config")
        pushed += len(config_bytes)
    manifest = dict(base.manifest)
    manifest["config"] = {
        "mediaType": base.manifest["config"].get("mediaType") or (DOCKER_CONFIG if docker else OCI_CONFIG),
        "digest": config_digest,
        "size": len(config_bytes),
    }
    manifest["layers"] = [
        *base.manifest.get("layers", []),
        {"mediaType": GZIP_LAYER_DOCKER if docker else GZIP_LAYER_OCI, "digest": layer.digest, "size": layer.size},
    ]
    manifest.pop("annotations", None)
    manifest.pop("subject", None)
    body = json.dumps(manifest, separators=(",", ":")).encode()
    digest = digest_bytes(body)
    for tag in tags:  # each PUT names a complete image: blobs first, tags last
        client.put_manifest(target.repository, tag, body, base.media_type)
        pushed += len(body)
        log.line(f"tagged {target.with_reference(tag)} {digest}")
    if not tags:
        client.put_manifest(target.repository, digest, body, base.media_type)
        pushed += len(body)
    size = len(config_bytes) + sum(int(d["size"]) for d in manifest["layers"])
    return Appended(digest, pushed, size)
