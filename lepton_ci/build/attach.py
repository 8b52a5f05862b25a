"""The image built for a model version, recorded with that version in the registry.

A version is immutable: its digest covers its metadata, so the image digest cannot be written into the
version itself after the fact (and must not be: the gate signed the version before any image existed).
Instead a small record is attached *to* the version, the way the OCI world attaches signatures and
SBOMs to an image:
- `oci://` registries: an OCI artifact (artifactType `application/vnd.lepton-ci.image.v1+json`, one layer
  holding the image record) whose `subject` is the version's manifest, listed by the referrers API or,
  on registries without it (distribution 2.8), the referrers tag schema (`sha256-<hex>` index tag);
- `file://` registries: `models/<name>/attachments/v<N>/image-<digest 12>.json`, written atomically.
Attachments are additive (one per image, a rebuild adds another) and never change the version's digest;
they are pointers, not trust: the image carries the model digest in its labels and the model files in a
layer whose digest anyone can recompute.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lepton_ci.fsutil import atomic_write_json, canonical_json
from lepton_ci.records import ModelVersion

IMAGE_ARTIFACT = "application/vnd.lepton-ci.image.v1+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"


def attach_image(registry: Any, mv: ModelVersion, record: dict[str, Any]) -> str:
    """Attach `record` (an image.json) to the version; returns where it went, for the log."""
    from lepton_ci.registry.local import LocalStorage
    from lepton_ci.registry.oci import OciStorage

    storage = registry.storage
    digest12 = str(record.get("digest", "")).removeprefix("sha256:")[:12] or "local"
    if isinstance(storage, LocalStorage):
        path = storage._model_dir(mv.name) / "attachments" / f"v{mv.version}" / f"image-{digest12}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, record)
        return str(path)
    if isinstance(storage, OciStorage):
        return _attach_oci(storage, mv, record)
    raise TypeError(f"cannot attach records to a {type(storage).__name__}")


def _attach_oci(storage: Any, mv: ModelVersion, record: dict[str, Any]) -> str:
    from lepton_ci.errors import RegistryError
    from lepton_ci.oci.client import OCI_MANIFEST

    client, repo = storage.client, storage._repo(mv.name)
    tag = storage._version_tag(mv.name, mv.version)
    got = client.get_manifest(repo, tag) if tag else None
    if got is None:
        raise RegistryError(f"{repo}: version {mv.version} has no manifest to attach the image record to")
    data, media, digest = got
    body = canonical_json(record)
    layer = client.push_bytes(repo, body, "image record")
    empty = client.push_bytes(repo, b"{}", "empty config")
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": IMAGE_ARTIFACT,
        "config": {"mediaType": EMPTY_CONFIG, "digest": empty, "size": 2},
        "layers": [{"mediaType": IMAGE_ARTIFACT, "digest": layer, "size": len(body)}],
        "annotations": {
            "org.opencontainers.image.created": str(record.get("created", "")),
            "ai.lepton.image": str(record.get("image", "")),
        },
    }
    subject = {"mediaType": media or OCI_MANIFEST, "digest": digest, "size": len(data)}
    attached = client.attach(repo, subject, manifest)
    return f"{repo}@{attached} (referring to {tag})"


def attached_images(registry: Any, mv: ModelVersion) -> list[dict[str, Any]]:
    """The image records attached to a version, oldest first."""
    from lepton_ci.registry.local import LocalStorage
    from lepton_ci.registry.oci import OciStorage

    storage = registry.storage
    found: list[dict[str, Any]] = []
    if isinstance(storage, LocalStorage):
        folder = storage._model_dir(mv.name) / "attachments" / f"v{mv.version}"
        for path in sorted(folder.glob("image-*.json")) if folder.is_dir() else []:
            found.append(json.loads(Path(path).read_text()))
    elif isinstance(storage, OciStorage):
        repo = storage._repo(mv.name)
        tag = storage._version_tag(mv.name, mv.version)
        subject = storage.client.manifest_digest(repo, tag) if tag else None
        for desc in storage.client.referrers(repo, subject, IMAGE_ARTIFACT) if subject else []:
            got = storage.client.get_manifest(repo, desc["digest"])
            if got is None:
                continue
            layer = json.loads(got[0])["layers"][0]
            raw = storage.client.read_blob(repo, layer["digest"], 1 << 20)
            if raw is not None:
                found.append(json.loads(raw))
    return sorted(found, key=lambda r: str(r.get("created", "")))
