"""Pull the files of any OCI artifact (pushed by oras, a ModelKit-style tool, or lepton-ci) into a directory,
verified: what `tag --from` imports.

A layer is a file when it names one (`org.opencontainers.image.title`, else ModelPack's
`org.cncf.model.filepath`); its path must stay inside the destination (no absolute path, no `..`), no two
layers may name the same path, and its bytes must match the layer's digest and size before the file
appears under its name. Layers that name no file (configs, signatures) are skipped and listed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lepton_ci.errors import RegistryError, TransientError, UserError
from lepton_ci.oci.client import CHUNK, OciClient
from lepton_ci.oci.reference import TAG_RE, parse_oci_url

TITLE = "org.opencontainers.image.title"
FILEPATH = "org.cncf.model.filepath"
MAX_LAYERS = 10_000


@dataclass
class Pulled:
    manifest_digest: str
    artifacts: list[dict[str, Any]] = field(default_factory=list)  # {path, sha256, size}
    skipped: list[str] = field(default_factory=list)


def split_reference(source: str) -> tuple[str, str]:
    """oci://HOST/REPO:TAG or oci://HOST/REPO@sha256:… -> (oci://HOST/REPO, tag or digest)."""
    if "@" in source:
        base, _, digest = source.rpartition("@")
        if not digest.startswith("sha256:") or len(digest) != 71:
            raise UserError(f"{source}: a digest reference must be @sha256:<64 hex>")
        return base, digest
    head, _, last = source.rpartition("/")
    if ":" in last and head.startswith("oci://") and "/" in head[len("oci://") :] + "/":
        name, _, tag = last.partition(":")
        if not TAG_RE.fullmatch(tag):
            raise UserError(f"{source}: {tag!r} is not a valid tag")
        return f"{head}/{name}", tag
    return source, "latest"


def _path_problem(path: str) -> str | None:
    from lepton_ci.registry.shared import artifact_path_problem

    return artifact_path_problem(path)


def pull_artifact(source: str, dest: Path, *, client: OciClient | None = None) -> Pulled:
    base, reference = split_reference(source)
    ref = parse_oci_url(base)
    client = client or OciClient(ref)
    got = client.get_manifest(ref.repository, reference)
    if got is None:
        raise RegistryError(f"{source}: no such artifact (the registry has no manifest {reference})")
    data, media, digest = got
    try:
        manifest = json.loads(data)
        layers = manifest["layers"]
        if not isinstance(layers, list) or len(layers) > MAX_LAYERS:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise RegistryError(f"{source} is not an image manifest with layers ({media or 'no media type'})") from None
    pulled = Pulled(manifest_digest=digest)
    seen: set[str] = set()
    for i, layer in enumerate(layers):
        annotations = layer.get("annotations") if isinstance(layer, dict) else None
        path = (annotations or {}).get(TITLE) or (annotations or {}).get(FILEPATH)
        if not path:
            pulled.skipped.append(f"layer {i} ({layer.get('mediaType') if isinstance(layer, dict) else '?'})")
            continue
        why = _path_problem(path) if isinstance(path, str) else "not a string"
        if why:
            raise RegistryError(f"{source}: layer {i} names the file {path!r}, which is refused: {why}")
        if path in seen:
            raise RegistryError(f"{source}: two layers name the file {path!r}")
        seen.add(path)
        blob, size = layer.get("digest"), layer.get("size")
        if not (isinstance(blob, str) and blob.startswith("sha256:") and len(blob) == 71 and isinstance(size, int)):
            raise RegistryError(f"{source}: layer {i} ({path}) has no sha256 digest and size")
        target = dest.joinpath(*path.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        _download(client, ref.repository, blob, size, target, f"{source} {path}")
        pulled.artifacts.append({"path": path, "sha256": blob.removeprefix("sha256:"), "size": size})
    if not pulled.artifacts:
        raise RegistryError(f"{source} has no layer that names a file (org.opencontainers.image.title)")
    return pulled


def _download(client: OciClient, repo: str, digest: str, size: int, target: Path, what: str) -> None:
    """Stream a blob into a temporary name next to `target`, renamed into place only when it matches."""
    stream = client.open_blob(repo, digest)
    if stream is None:
        raise RegistryError(f"{what}: the registry has no blob {digest[:19]}")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    h, got = hashlib.sha256(), 0
    try:
        with stream, os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                got += len(chunk)
                if got > size:
                    raise RegistryError(f"{what}: more bytes than the layer's size {size}")
                h.update(chunk)
                out.write(chunk)
        if got != size or "sha256:" + h.hexdigest() != digest:
            raise RegistryError(f"{what}: the bytes do not match the layer's digest and size")
        os.replace(tmp, target)
    except (RegistryError, TransientError, OSError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
