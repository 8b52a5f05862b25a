"""The registry seams: what the steps see (`Registry`) and what a backend implements (`Storage`).

Two protocols, because the trust rules must not be re-implemented per backend: reference resolution,
the idempotent-push rule, the hash-chained alias history and the verification of everything read live
once in `shared.ModelRegistry`, which implements `Registry` on top of any `Storage`. A backend
(file://, and next oci://) offers only storage primitives: bytes in, bytes out, a lock, a listing.

This module holds types only and imports nothing from its siblings, so every backend and the shared
layer can import it without a cycle. The scheme table and `open_registry` live in `backends.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from lepton_ci.errors import RegistryError
from lepton_ci.records import ModelVersion


class Interrupted(RegistryError):
    """A listed version whose write never completed: the backend shows its name but holds no manifest for it
    (an OCI registry stopped in the middle of a tag write can leave such a tag). It was never acknowledged,
    so reads of "every version" and `latest` pass over it and `check` warns; naming it directly is an error."""


@dataclass
class AliasEvent:
    """One alias move. `prev` is the digest of the event before it, so the history is a hash chain."""

    seq: int
    alias: str
    action: str  # "move" or "rollback"
    to: int
    from_: int | None
    at: str
    reason: str = ""
    actor: str = ""
    prev: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "alias": self.alias,
            "action": self.action,
            "from": self.from_,
            "to": self.to,
            "at": self.at,
            "reason": self.reason,
            "actor": self.actor,
            "prev": self.prev,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AliasEvent:
        """Build from a history line that `shared.parse_history` has already validated (keys and types)."""
        return cls(
            seq=d["seq"],
            alias=d["alias"],
            action=d["action"],
            to=d["to"],
            from_=d.get("from"),
            at=d["at"],
            reason=d.get("reason", ""),
            actor=d.get("actor", ""),
            prev=d.get("prev"),
        )


@dataclass
class Problem:
    """A finding of `registry check`: where, and what is wrong."""

    where: str
    message: str
    severity: str = "error"  # "error" fails the check; "warning" does not


@dataclass
class PushResult:
    version: ModelVersion
    created: bool
    aliases: list[AliasEvent] = field(default_factory=list)


@dataclass(frozen=True)
class Stored:
    """A blob or a temporary file a storage holds, as `gc` sees it.

    `key` is what `Storage.delete` needs back: the hex digest of a blob, or the backend's own name for a
    temporary file (a path relative to the registry for file://). `age_s` is how long ago it was last
    written; `gc` never removes anything younger than its minimum age, because a running `tag` may own it.
    """

    kind: str  # "blob" or "temp"
    key: str
    size: int
    age_s: float


@dataclass
class GcItem:
    """One thing `gc` found: what it is, why it may go, and what was done about it."""

    kind: str  # "blob" (no version references it) or "temp" (left by an interrupted write)
    where: str
    size: int
    age_s: float
    action: str  # "deleted", "would delete", or "kept: <why>"


# A check of one version beyond its digests (the gate signature): returns a problem, or None when fine.
Verifier = Callable[[ModelVersion], str | None]


@runtime_checkable
class Storage(Protocol):
    """The primitives a backend implements; everything else is shared (see `shared.ModelRegistry`).

    Rules every backend keeps:
    - Names reaching a storage were validated by the shared layer; `models()` may return anything found.
    - "Absent" is a return value (None, False, an empty list) only where the storage positively read that
      nothing is there. Any failure to read (I/O error, refused request, garbage answer) raises a
      `RegistryError` (damaged, refused) or a `TransientError` (network, I/O), never an empty answer.
    - `create_manifest` never replaces an existing version; `put_blob` hashes while it stores.
    """

    url: str

    @classmethod
    def from_url(cls, url: str, base_dir: Path, *, create: bool = False) -> Storage:
        """Open the storage at `url`. Nothing there and not `create`: `NotFound`."""
        ...

    def models(self) -> list[str]:
        """Names of the models that have anything stored."""
        ...

    def version_numbers(self, name: str) -> list[int]:
        """Version numbers of a model, sorted, without reading any manifest."""
        ...

    def read_manifest(self, name: str, number: int) -> bytes | None:
        """The stored manifest bytes of one version, or None when that version does not exist."""
        ...

    def create_manifest(self, name: str, number: int, data: bytes) -> bool:
        """Store a new version's manifest; False (and nothing written) when that number already exists."""
        ...

    def manifest_location(self, name: str, number: int) -> str:
        """Where a manifest lives, for messages (a path, a URL)."""
        ...

    def put_blob(self, name: str, src: Path, sha256: str | None = None) -> tuple[str, int]:
        """Store a file by content for model `name`; returns (hex sha256, size). (OCI registries keep blobs
        per repository, and each model is its own repository.) `sha256` is what the caller already knows
        the file's digest to be (tag has it from the run record): a backend may then skip a blob it holds
        and upload without hashing first, but the stored bytes must still be proven to have that digest
        (the OCI registry checks it on upload; file:// hashes while copying)."""
        ...

    def open_blob(self, name: str, digest_hex: str) -> BinaryIO | None:
        """A readable stream of a blob's bytes, or None when no such blob is stored. Unverified."""
        ...

    def read_history(self, name: str) -> bytes | None:
        """The alias history document of a model, or None when it has none yet."""
        ...

    def write_history(self, name: str, data: bytes) -> None:
        """Replace the alias history document atomically (readers see the old one or the new one)."""
        ...

    def history_location(self, name: str) -> str:
        """Where the history lives, for `file:line` messages."""
        ...

    def history_writes(self, name: str) -> list[tuple[int, str]]:
        """Every history write the backend can still see, as (number of events, hex sha256 of the history
        document written): `check` proves each was a prefix of today's history, so a write another writer
        lost or forked (no conditional writes on OCI) is reported. A backend that keeps no trail returns []."""
        ...

    def publish_alias(self, name: str, alias: str, number: int) -> None:
        """Mirror an alias move where the backend's own tools can see it (an OCI tag, so `oras pull
        REPO/MODEL:production` works). The history stays the record; a backend without such a place does
        nothing."""
        ...

    def lock(self, name: str) -> AbstractContextManager[None]:
        """Serialize writers of one model (version numbering, alias moves) as far as the backend can."""
        ...

    def blobs(self) -> list[Stored]:
        """Every stored blob (kind "blob", key = hex digest). A backend that cannot list its blobs (the OCI
        distribution API has no such call; the registry collects its own garbage) returns []."""
        ...

    def temp_files(self) -> list[Stored]:
        """Leftovers of interrupted writes (kind "temp"); lock files are not leftovers."""
        ...

    def delete(self, item: Stored) -> None:
        """Remove a blob or temporary file that `blobs()` or `temp_files()` returned."""
        ...


class Registry(Protocol):
    """What the steps use. Implemented once, by `shared.ModelRegistry`, over any `Storage`."""

    url: str

    def push(
        self,
        name: str,
        files: list[tuple[str, Path]],
        metadata: dict[str, Any],
        *,
        aliases: Sequence[str] = (),
        reason: str = "",
        sha256: dict[str, str] | None = None,
    ) -> PushResult: ...

    def get(self, name: str, ref: str | int) -> ModelVersion: ...

    def version_numbers(self, name: str) -> list[int]: ...

    def versions(self, name: str) -> list[ModelVersion]: ...

    def models(self) -> list[str]: ...

    def aliases(self, name: str) -> dict[str, int]: ...

    def history(self, name: str, alias: str | None = None) -> list[AliasEvent]: ...

    def move_alias(self, name: str, alias: str, version: int, *, reason: str = "") -> AliasEvent: ...

    def rollback(self, name: str, alias: str, *, reason: str = "") -> AliasEvent: ...

    def fetch(self, name: str, version: int | str, dest: Path) -> Path: ...

    def check(self, verifier: Verifier | None = None, names: Sequence[str] | None = None) -> list[Problem]: ...

    def gc(self, *, apply: bool = False, min_age_s: float = 3600.0) -> list[GcItem]: ...
