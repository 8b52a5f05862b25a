"""The registry seam: what every backend (file://, oci://, later others) offers to the steps.

Steps talk to `Registry` only; `open_registry` picks the backend from the URL scheme so a new backend
is one module plus one line here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lepton_ci.errors import RegistryError
from lepton_ci.records import ModelVersion


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
        return {"seq": self.seq, "alias": self.alias, "action": self.action, "from": self.from_, "to": self.to,
                "at": self.at, "reason": self.reason, "actor": self.actor, "prev": self.prev}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AliasEvent":
        return cls(seq=d["seq"], alias=d["alias"], action=d["action"], to=d["to"], from_=d.get("from"),
                   at=d["at"], reason=d.get("reason", ""), actor=d.get("actor", ""), prev=d.get("prev"))


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


class Registry(Protocol):
    url: str

    def push(self, name: str, files: list[tuple[str, Path]], metadata: dict[str, Any], *,
             aliases: list[str] = (), reason: str = "") -> PushResult: ...

    def get(self, name: str, ref: str | int) -> ModelVersion: ...

    def versions(self, name: str) -> list[ModelVersion]: ...

    def models(self) -> list[str]: ...

    def aliases(self, name: str) -> dict[str, int]: ...

    def history(self, name: str, alias: str | None = None) -> list[AliasEvent]: ...

    def move_alias(self, name: str, alias: str, version: int, *, reason: str = "") -> AliasEvent: ...

    def rollback(self, name: str, alias: str, *, reason: str = "") -> AliasEvent: ...

    def fetch(self, name: str, version: int, dest: Path) -> Path: ...

    def check(self) -> list[Problem]: ...


def open_registry(url: str, base_dir: Path, *, create: bool = False) -> Registry:
    """Open the registry at `url`; relative file:// paths are relative to `base_dir` (the config's dir)."""
    if url.startswith("file://"):
        from lepton_ci.registry.local import LocalRegistry

        raw = url[len("file://"):]
        path = Path(raw) if raw.startswith("/") else base_dir / raw
        return LocalRegistry(path, create=create)
    if url.startswith("oci://"):
        raise RegistryError(f"registry {url!r}: the oci:// backend is not available in this release yet (use file://PATH)")
    raise RegistryError(f"registry URL {url!r} not understood (expected file://PATH or oci://HOST/REPO)")
