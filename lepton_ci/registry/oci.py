"""The oci:// registry storage: models as repositories in any OCI registry (GHCR, GitLab, Harbor, ECR,
CNCF distribution).

Layout, for `oci://HOST/REPO` and model `NAME` (repository `REPO/NAME`):
- each version is one OCI manifest with the CNCF ModelPack artifact type, tagged `v<N>-<digest12>`
  (the version number and the first 12 hex digits of its content digest): one layer per artifact file
  (ModelPack media types, file path in `org.opencontainers.image.title` and `org.cncf.model.filepath`, so
  `oras pull` writes the files), a ModelPack config blob holding the version's metadata (run record, gate
  record, lineage), and one layer with lepton-ci's own version manifest (the bytes the shared layer
  verifies; `oras pull` writes it as `lepton-ci-version.json`);
- each alias is a tag on its version's manifest (`production`, `staging`), mirrored after every move;
- the alias history is an artifact of its own, tagged `lepton-history`, holding the hash-chained log; every
  write is also tagged `lepton-history-<events>-<sha12>`, the trail `registry check` compares with today's
  history to find a write that a racing writer lost or forked.

What the distribution API cannot give, and what this storage does instead: there is no conditional tag
write, so version numbering and alias moves are serialised by the CI's own lock (GitHub `concurrency:`,
GitLab `resource_group:`) and, on one machine, by a local file lock; a version tag carries its digest so
it can never be taken over by another version unnoticed, and a lost or forked history update breaks the
hash chain, which `registry check` reports. There is no blob listing either: `blobs()` is empty, and the
registry's own garbage collector removes unreferenced blobs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from lepton_ci.errors import RegistryError
from lepton_ci.fsutil import exclusive_lock
from lepton_ci.oci.client import OCI_MANIFEST, OciClient, manifest_json, sha256_file
from lepton_ci.oci.reference import RegistryRef, parse_oci_url
from lepton_ci.registry.base import Interrupted, Stored
from lepton_ci.registry.shared import ModelRegistry

VERSION_TAG_RE = re.compile(r"v([1-9][0-9]{0,17})-([0-9a-f]{12})")
HISTORY_TAG = "lepton-history"
HISTORY_WRITE_RE = re.compile(r"lepton-history-([0-9]{1,9})-([0-9a-f]{12})")
MODEL_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"
MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json"
WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_CONFIG = "application/vnd.cncf.model.weight.config.v1.raw"
DOC = "application/vnd.cncf.model.doc.v1.raw"
CODE = "application/vnd.cncf.model.code.v1.raw"
VERSION_LAYER = "application/vnd.lepton-ci.model-version.v1+json"
HISTORY_ARTIFACT = "application/vnd.lepton-ci.alias-history.v1"
HISTORY_LAYER = "application/vnd.lepton-ci.alias-history.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
VERSION_LIMIT = 16 * 1024 * 1024
HISTORY_LIMIT = 64 * 1024 * 1024
LOCK_TIMEOUT_S = 120.0
TITLE = "org.opencontainers.image.title"
VERSION_FILE = "lepton-ci-version.json"  # what `oras pull` names the version record next to the model files
FILEPATH = "org.cncf.model.filepath"


def layer_media_type(path: str, model_file: Any) -> str:
    """ModelPack's kind of file: the served model file and other binary files are weights; docs and code are
    what they are; small configuration files (JSON, YAML, tokenizers) are weight configuration."""
    low = path.lower()
    if path == model_file:
        return WEIGHT
    if low.endswith((".md", ".rst", ".txt")) or "license" in low or "readme" in low:
        return DOC
    if low.endswith((".py", ".ipynb", ".sh")):
        return CODE
    if low.endswith((".json", ".yaml", ".yml", ".toml", ".cfg", ".ini")):
        return WEIGHT_CONFIG
    return WEIGHT


class OciStorage:
    """Storage primitives over the OCI distribution API (see the module docstring for the layout)."""

    url: str = ""

    def __init__(self, ref: RegistryRef, client: OciClient) -> None:
        self.ref = ref
        self.client = client
        self.url = ref.url()
        self._tag_cache: dict[str, list[str]] = {}

    @classmethod
    def from_url(cls, url: str, base_dir: Path, *, create: bool = False) -> OciStorage:
        """A registry that answers is open: whether a model exists is a question per repository (its tags)."""
        ref = parse_oci_url(url)
        client = OciClient(ref)
        client.ping()
        return cls(ref, client)

    def _repo(self, name: str) -> str:
        return f"{self.ref.repository}/{name}"

    # --- versions ---------------------------------------------------------------------------------------

    def models(self) -> list[str]:
        """Models under the base repository, from the catalog. Registries that keep their catalog to
        themselves (GHCR, Docker Hub) refuse: then name the model (`registry -m NAME check`)."""
        prefix = self.ref.repository + "/"
        return sorted(
            {r[len(prefix) :] for r in self.client.catalog() if r.startswith(prefix) and "/" not in r[len(prefix) :]}
        )

    def _tags(self, name: str, *, fresh: bool = True) -> list[str]:
        """The repository's tags. `fresh=False` may answer from the list read last (by `version_numbers`, which
        every operation starts with, under the model's lock), plus the tags this storage wrote since: a push
        over n versions then lists the tags once, not n times."""
        if fresh or name not in self._tag_cache:
            self._tag_cache[name] = self.client.list_tags(self._repo(name)) or []  # None: no repository yet
        return self._tag_cache[name]

    def _tagged(self, name: str, tag: str) -> None:
        cached = self._tag_cache.get(name)
        if cached is not None and tag not in cached:
            cached.append(tag)

    def version_numbers(self, name: str) -> list[int]:
        numbers = set()
        for tag in self._tags(name):
            m = VERSION_TAG_RE.fullmatch(tag)
            if m:
                numbers.add(int(m.group(1)))
        return sorted(numbers)

    def _version_tag(self, name: str, number: int) -> str | None:
        def matching(tags: list[str]) -> list[str]:
            return sorted(t for t in tags if (m := VERSION_TAG_RE.fullmatch(t)) and int(m.group(1)) == number)

        tags = matching(self._tags(name, fresh=False)) or matching(self._tags(name))
        if len(tags) > 1:
            raise RegistryError(
                f"{self._repo(name)}: version {number} has two tags ({', '.join(tags)}): two writers registered it "
                "at once (the CI lock was missing); keep one and delete the other tag"
            )
        return tags[0] if tags else None

    def _manifest(self, name: str, tag: str) -> dict[str, Any] | None:
        got = self.client.get_manifest(self._repo(name), tag)
        if got is None:
            return None
        data, _media, _digest = got
        try:
            manifest = json.loads(data)
            if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), list):
                raise ValueError
        except ValueError:
            raise RegistryError(f"{self._repo(name)}:{tag} is not an OCI image manifest") from None
        return manifest

    def _layer(self, name: str, tag: str, manifest: dict[str, Any], media: str) -> dict[str, Any]:
        found = [x for x in manifest["layers"] if isinstance(x, dict) and x.get("mediaType") == media]
        if len(found) != 1 or not isinstance(found[0].get("digest"), str) or not isinstance(found[0].get("size"), int):
            raise RegistryError(f"{self._repo(name)}:{tag} is not a lepton-ci artifact (no single {media} layer)")
        return found[0]

    def _read_layer(self, name: str, tag: str, media: str, limit: int) -> bytes | None:
        """The one `media` layer of the manifest tagged `tag`, whole and digest-checked; None: no such tag."""
        manifest = self._manifest(name, tag)
        if manifest is None:
            return None
        layer = self._layer(name, tag, manifest, media)
        where = f"{self._repo(name)}:{tag}"
        if layer["size"] > limit:
            raise RegistryError(f"{where}: its {media} layer of {layer['size']:,} bytes is over the {limit:,} limit")
        data = self.client.read_blob(self._repo(name), layer["digest"], limit)
        if data is None:
            raise RegistryError(f"{where}: its {media} layer's blob is missing")
        return data

    def read_manifest(self, name: str, number: int) -> bytes | None:
        tag = self._version_tag(name, number)
        if tag is None:
            return None
        data = self._read_layer(name, tag, VERSION_LAYER, VERSION_LIMIT)
        if data is None:  # listed, yet the registry holds no manifest under it: a tag write cut short
            raise Interrupted(
                f"{self._repo(name)}:{tag} is listed but resolves to no manifest: its write was interrupted "
                "(the registry stopped mid-write)"
            )
        try:
            digest = json.loads(data).get("digest")
        except (ValueError, AttributeError):
            return data  # the shared layer says what is wrong with it
        if isinstance(digest, str) and digest.removeprefix("sha256:")[:12] != tag.split("-", 1)[1]:
            raise RegistryError(
                f"{self._repo(name)}:{tag} points at a manifest of another version (digest {digest[:19]}): "
                "the tag was moved by something other than lepton-ci"
            )
        return data

    def create_manifest(self, name: str, number: int, data: bytes) -> bool:
        if self._version_tag(name, number) is not None:
            return False
        mv = json.loads(data)
        repo = self._repo(name)
        tag = f"v{number}-{str(mv['digest']).removeprefix('sha256:')[:12]}"
        version_digest = self.client.push_bytes(repo, data, "version manifest")
        metadata = mv.get("metadata") or {}
        layers = [
            {
                # An encrypted file is stored as its ciphertext: the layer names those bytes (OCI's +encrypted)
                "mediaType": layer_media_type(a["path"], metadata.get("model_file"))
                + ("+encrypted" if "stored" in a else ""),
                "digest": f"sha256:{(a.get('stored') or a)['sha256']}",
                "size": (a.get("stored") or a)["size"],
                "annotations": {TITLE: a["path"], FILEPATH: a["path"]},
            }
            for a in mv["artifacts"]
        ]
        config = {
            "descriptor": {"name": name, "version": f"v{number}", "createdAt": mv.get("created")},
            "config": {"format": metadata.get("framework") or ""},
            "modelfs": {"type": "layers", "diffIds": [x["digest"] for x in layers]},
            "lepton-ci": {"digest": mv["digest"], "metadata": metadata},
        }
        config_bytes = manifest_json(config)
        config_digest = self.client.push_bytes(repo, config_bytes, "model config")
        layers.append(
            {
                "mediaType": VERSION_LAYER,
                "digest": version_digest,
                "size": len(data),
                "annotations": {TITLE: VERSION_FILE},
            }
        )
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": MODEL_ARTIFACT,
            "config": {"mediaType": MODEL_CONFIG, "digest": config_digest, "size": len(config_bytes)},
            "layers": layers,
            "annotations": {
                "org.opencontainers.image.created": str(mv.get("created") or ""),
                "org.opencontainers.image.version": f"v{number}",
                "org.opencontainers.image.title": name,
                "dev.lepton-ci.digest": str(mv["digest"]),
            },
        }
        self.client.put_manifest(repo, tag, manifest_json(manifest))
        self._tagged(name, tag)
        return True

    def manifest_location(self, name: str, number: int) -> str:
        return f"oci://{self.ref.host}/{self._repo(name)}:v{number}"

    # --- blobs ------------------------------------------------------------------------------------------

    def put_blob(self, name: str, src: Path, sha256: str | None = None) -> tuple[str, int]:
        if sha256 is None:
            digest, size = sha256_file(src)
        else:  # known (tag verified it against the run record): no second pass over the file
            digest, size = f"sha256:{sha256}", src.stat().st_size
        # The registry checks the bytes against `digest` as they arrive: a file that changes between the hash
        # and the upload is refused (DIGEST_INVALID), never stored under the wrong name.
        self.client.push_blob(self._repo(name), src, digest, size)
        return digest.removeprefix("sha256:"), size

    def open_blob(self, name: str, digest_hex: str) -> BinaryIO | None:
        return self.client.open_blob(self._repo(name), f"sha256:{digest_hex}")

    def blobs(self) -> list[Stored]:
        return []  # no blob listing in the distribution API; the registry's own gc collects orphans

    def temp_files(self) -> list[Stored]:
        return []  # upload sessions expire on the server

    def delete(self, item: Stored) -> None:
        raise RegistryError("an OCI registry removes unreferenced blobs with its own garbage collector")

    # --- history and aliases ----------------------------------------------------------------------------

    def read_history(self, name: str) -> bytes | None:
        return self._read_layer(name, HISTORY_TAG, HISTORY_LAYER, HISTORY_LIMIT)

    def write_history(self, name: str, data: bytes) -> None:
        repo = self._repo(name)
        layer_digest = self.client.push_bytes(repo, data, "alias history")
        empty = b"{}"
        self.client.push_bytes(repo, empty, "empty config")
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": HISTORY_ARTIFACT,
            "config": {"mediaType": EMPTY, "digest": "sha256:" + hashlib.sha256(empty).hexdigest(), "size": 2},
            "layers": [
                {
                    "mediaType": HISTORY_LAYER,
                    "digest": layer_digest,
                    "size": len(data),
                    "annotations": {TITLE: "lepton-history.jsonl"},
                }
            ],
        }
        data_manifest = manifest_json(manifest)
        # The moving tag, then a tag of its own for this write (`lepton-history-<events>-<sha12>`): the trail
        # `history_writes` reads, so `check` sees a write that a racing writer's PUT later hid. In this order a
        # crash between the two PUTs leaves a trail that is still a prefix of the history (no false alarm).
        events = data.count(b"\n")
        self.client.put_manifest(repo, HISTORY_TAG, data_manifest)
        self.client.put_manifest(repo, f"{HISTORY_TAG}-{events}-{hashlib.sha256(data).hexdigest()[:12]}", data_manifest)

    def history_writes(self, name: str) -> list[tuple[int, str]]:
        repo = self._repo(name)
        found = []
        for tag in self._tags(name):
            m = HISTORY_WRITE_RE.fullmatch(tag)
            if not m:
                continue
            manifest = self._manifest(name, tag)
            if manifest is None:
                continue
            layer = self._layer(name, tag, manifest, HISTORY_LAYER)
            if not str(layer["digest"]).startswith(f"sha256:{m.group(2)}"):
                raise RegistryError(f"{repo}:{tag} names another history document than it holds")
            found.append((int(m.group(1)), str(layer["digest"]).removeprefix("sha256:")))
        return found

    def history_location(self, name: str) -> str:
        return f"oci://{self.ref.host}/{self._repo(name)}:{HISTORY_TAG}"

    def publish_alias(self, name: str, alias: str, number: int) -> None:
        tag = self._version_tag(name, number)
        got = self.client.get_manifest(self._repo(name), tag) if tag else None
        if got is None:
            raise RegistryError(f"{self._repo(name)}: version {number} vanished while its alias {alias} moved")
        data, media, _digest = got
        self.client.put_manifest(self._repo(name), alias, data, media or OCI_MANIFEST)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Serialises writers on this machine; across machines the CI's lock does (see the module docstring)."""
        key = hashlib.sha256(f"{self.url}/{name}".encode()).hexdigest()[:32]
        directory = Path(tempfile.gettempdir()) / "lepton-ci-oci-locks"
        directory.mkdir(mode=0o700, exist_ok=True)
        f = open(os.path.join(directory, f"{key}.lock"), "a+b")  # noqa: SIM115 - closed by the with below
        busy = lambda: RegistryError(f"model {name!r} in {self.url} is locked by another process")  # noqa: E731
        with f, exclusive_lock(f, LOCK_TIMEOUT_S, busy):
            yield


class OciRegistry(ModelRegistry):
    storage_class = OciStorage
