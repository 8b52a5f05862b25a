"""The records steps hand to each other: RunRecord, GateRecord, ModelVersion, Deployment.

Records are the only interface between steps (DESIGN.md). Each carries `kind` and `schema_version`;
fields this version does not know are kept in `extra` and written back unchanged, so an older
lepton-ci passing a newer record along does not strip it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from lepton_ci.errors import UserError
from lepton_ci.fsutil import atomic_write_json, canonical_json, sha256_bytes

R = TypeVar("R", bound="Record")


@dataclass
class Record:
    KIND: ClassVar[str] = ""
    SCHEMA_VERSION: ClassVar[int] = 1

    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out["schema_version"] = self.SCHEMA_VERSION
        out["kind"] = self.KIND
        for f in fields(self):
            if f.name != "extra":
                out[f.name] = getattr(self, f.name)
        return out

    @classmethod
    def from_dict(cls: type[R], data: Any, *, source: str = "record") -> R:
        if not isinstance(data, dict):
            raise UserError(f"expected a JSON object holding a {cls.KIND} record", where=source)
        kind = data.get("kind")
        if kind != cls.KIND:
            raise UserError(f"expected a {cls.KIND} record, found kind {kind!r}", where=source)
        version = data.get("schema_version")
        if not isinstance(version, int) or version > cls.SCHEMA_VERSION:
            raise UserError(
                f"schema_version {version!r} is not supported (this lepton-ci reads up to {cls.SCHEMA_VERSION})",
                where=source,
            )
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known and k not in ("kind", "schema_version")}
        try:
            return cls(**kwargs, extra=extra)
        except TypeError as exc:
            missing = str(exc).split("argument", 1)[-1].strip(": ")
            raise UserError(f"{cls.KIND} record lacks required field(s) {missing}", where=source) from None

    def write(self, path: str | Path) -> Path:
        p = Path(path)
        atomic_write_json(p, self.to_dict())
        return p

    @classmethod
    def read(cls: type[R], path: str | Path) -> R:
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise UserError(f"{cls.KIND} record not found (expected a JSON file)", where=str(p)) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"not valid JSON: {exc}", where=str(p)) from None
        return cls.from_dict(data, source=str(p))


def artifacts_digest(artifacts: list[dict[str, Any]]) -> str:
    """Digest of a set of model files, independent of order: what a gate blesses and deploy checks."""
    items = sorted((a["path"], a["sha256"]) for a in artifacts)
    return "sha256:" + sha256_bytes(canonical_json(items))


def check_finite_metrics(metrics: dict[str, Any], source: str) -> None:
    """Reject NaN/inf: a gate cannot compare them and JSON cannot carry them."""
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"metric {key!r} is {value}; metrics must be finite numbers", where=source)


@dataclass
class RunRecord(Record):
    KIND: ClassVar[str] = "run"

    run_id: str = ""
    model: str = ""
    git: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    artifacts_digest: str = ""
    data: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    exit: dict[str, Any] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.exit.get("status") == "succeeded"


@dataclass
class GateRecord(Record):
    KIND: ClassVar[str] = "gate"

    model: str = ""
    candidate: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    verdict: str = "fail"
    created: str = ""
    signature: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def signed_payload(self) -> bytes:
        """Canonical bytes the signature covers: the whole record except the signature itself."""
        body = self.to_dict()
        body.pop("signature", None)
        return canonical_json(body)


@dataclass
class ModelVersion(Record):
    KIND: ClassVar[str] = "model-version"

    name: str = ""
    version: int = 0
    digest: str = ""
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    artifacts_digest: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    created: str = ""

    def manifest(self) -> dict[str, Any]:
        """The content the version digest covers (everything but the digest)."""
        body = self.to_dict()
        body.pop("digest", None)
        return body

    def compute_digest(self) -> str:
        return "sha256:" + sha256_bytes(canonical_json(self.manifest()))

    @property
    def run(self) -> dict[str, Any] | None:
        return self.metadata.get("run")

    @property
    def gate(self) -> dict[str, Any] | None:
        return self.metadata.get("gate")

    @property
    def metrics(self) -> dict[str, Any]:
        run = self.run or {}
        return dict(run.get("metrics") or {})


@dataclass
class Deployment(Record):
    KIND: ClassVar[str] = "deployment"

    target: str = "local"
    model: str = ""
    version: int = 0
    digest: str = ""
    endpoint: str = ""
    status: str = "unknown"
    health: list[dict[str, Any]] = field(default_factory=list)
    previous: dict[str, Any] | None = None
    process: dict[str, Any] = field(default_factory=dict)
    created: str = ""
