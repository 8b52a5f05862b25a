"""The records steps hand to each other: RunRecord, GateRecord, ModelVersion, Deployment, ImageRecord.

Records are the only interface between steps (DESIGN.md). Each carries `kind` and `schema_version`;
fields this version does not know are kept in `extra` and written back unchanged, so an older
lepton-ci passing a newer record along does not strip it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from lepton_ci.errors import UserError
from lepton_ci.fsutil import atomic_write_json, canonical_json, parse_json_strict, sha256_bytes, short_repr
from lepton_ci.limits import RECORD_MAX_BYTES, read_limited

R = TypeVar("R", bound="Record")

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

# The JSON type each field must have when read; a record that breaks it is refused with the field named
# (an `exit` that is a list once ended as a Python traceback). Numbers exclude booleans.
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "dict": (dict,),
    "list": (list,),
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
}


def _expected_types(annotation: str) -> tuple[tuple[type, ...], bool]:
    optional = "None" in annotation
    head = annotation.replace(" | None", "").split("[", 1)[0].strip()
    return _JSON_TYPES.get(head, (object,)), optional


def _type_name(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def metric_problem(key: Any, value: Any) -> str | None:
    """Why `value` cannot be a metric (a gate compares numbers: finite, not bool, fits a float)."""
    if not isinstance(key, str) or not key or any(ord(c) < 32 for c in key):
        return f"metric name {short_repr(key, 60)} is not a plain name"
    problem = number_problem(value)
    return f"metric {short_repr(key)} {problem}" if problem else None


def number_problem(value: Any) -> str | None:
    """Why `value` is not a number a record may hold (finite, not a boolean, fits a float), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"is {_type_name(value)}, expected a number"
    if isinstance(value, int):
        try:
            float(value)
        except OverflowError:
            return "is an integer too large for a float"
    elif not math.isfinite(value):
        return f"is {value}; metrics must be finite numbers"
    return None


def validate_metrics(metrics: Any, source: str, what: str = "metrics") -> None:
    if not isinstance(metrics, dict):
        raise UserError(f"{what} must be an object of names to numbers, got {_type_name(metrics)}", where=source)
    for key, value in metrics.items():
        problem = metric_problem(key, value)
        if problem:
            raise UserError(f"{what}: {problem}", where=source)


def validate_artifacts(artifacts: list[Any], source: str, what: str = "artifacts") -> None:
    """Each entry names a relative path inside the model and the sha256 of its bytes."""
    for i, art in enumerate(artifacts):
        if not isinstance(art, dict):
            raise UserError(f"{what}[{i}] must be an object, got {_type_name(art)}", where=source)
        path, digest, size = art.get("path"), art.get("sha256"), art.get("size", 0)
        if not isinstance(path, str) or not safe_relative_path(path):
            raise UserError(
                f"{what}[{i}].path {short_repr(path)} must be a relative path inside the model", where=source
            )
        if not isinstance(digest, str) or not SHA256_HEX.fullmatch(digest):
            raise UserError(f"{what}[{i}].sha256 must be 64 lower-case hex digits", where=source)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise UserError(f"{what}[{i}].size must be a non-negative integer", where=source)


def safe_relative_path(path: str) -> bool:
    """A POSIX path that stays inside the directory it is joined to: no absolute path, no `..`, no
    backslashes or control characters, no empty or `.` parts."""
    if not path or path.startswith("/") or "\\" in path or any(ord(c) < 32 or ord(c) == 127 for c in path):
        return False
    parts = path.split("/")
    return all(p not in ("", ".", "..") for p in parts)


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
            raise UserError(f"expected a {cls.KIND} record, found kind {short_repr(kind)}", where=source)
        version = data.get("schema_version")
        if not isinstance(version, int) or version > cls.SCHEMA_VERSION:
            raise UserError(
                f"schema_version {short_repr(version)} is not supported "
                f"(this lepton-ci reads up to {cls.SCHEMA_VERSION})",
                where=source,
            )
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        for f in fields(cls):
            if f.name in kwargs:
                types, optional = _expected_types(str(f.type))
                value = kwargs[f.name]
                if (value is None and not optional) or (
                    value is not None
                    and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types))
                ):
                    raise UserError(
                        f"{cls.KIND} record field {f.name!r} must be {_expected_name(types)}, got {_type_name(value)}",
                        where=source,
                    )
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
        return cls.from_dict(read_json(p, f"{cls.KIND} record"), source=str(p))


def read_json(path: Path, what: str, limit: int = RECORD_MAX_BYTES) -> Any:
    """A bounded JSON read (`limits.read_limited`) that turns every way it can fail into one line naming
    the file; the content is parsed by `fsutil.loads_strict` (strict UTF-8, finite numbers only, no lone
    surrogates, bounded nesting), so whatever it returns can be written back."""
    try:
        raw = read_limited(path, limit, what)
    except FileNotFoundError:
        raise UserError(f"{what} not found (expected a JSON file)", where=str(path)) from None
    except IsADirectoryError:
        raise UserError(f"{what} path is a directory, expected a JSON file", where=str(path)) from None
    except OSError as exc:
        raise UserError(f"cannot read {what}: {exc.strerror}", where=str(path)) from None
    return parse_json_strict(raw, what, str(path))


def _expected_name(types: tuple[type, ...]) -> str:
    if types == (int, float):
        return "a number"
    return " or ".join(_type_name(t()) for t in types if t is not object) or "a JSON value"


def artifacts_digest(artifacts: list[dict[str, Any]]) -> str:
    """Digest of a set of model files, independent of order: what a gate blesses and deploy checks."""
    items = sorted((a["path"], a["sha256"]) for a in artifacts)
    return "sha256:" + sha256_bytes(canonical_json(items))


def check_finite_metrics(metrics: dict[str, Any], source: str) -> None:
    """Reject NaN/inf and non-numbers: a gate cannot compare them and JSON cannot carry them."""
    validate_metrics(metrics, source)


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

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "record") -> RunRecord:
        rec = super().from_dict(data, source=source)
        validate_metrics(rec.metrics, source)
        validate_artifacts(rec.artifacts, source)
        if rec.artifacts_digest and rec.artifacts_digest != artifacts_digest(rec.artifacts):
            raise UserError(
                "artifacts_digest does not match the artifacts listed (the record was edited)", where=source
            )
        return rec


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

    def baseline_outputs(self) -> dict[str, str]:
        """What the gate compared against, for CI outputs, the console and the report.

        A CI user must be able to see from the step's outputs alone whether the gate compared against a
        registry version or against nothing, so "none" always says why (disabled, first run, no metrics at
        the git ref) and a registry baseline names its version and digest."""
        base = self.baseline
        source = str(base.get("source") or "none")
        ref = "" if base.get("ref") is None else str(base.get("ref"))
        version = "" if base.get("version") is None else str(base.get("version"))
        if base.get("metrics") is None:
            source_out = "none"
            if source == "none":
                text = "none (baseline disabled)"
            elif source == "registry":
                text = f"none (first run: no {ref!r} in the registry yet)"
            elif source == "git":
                text = f"none (no metrics files at git:{ref})"
            else:
                text = f"none ({source} {ref})"
        else:
            source_out = source
            if source == "registry":
                digest = str(base.get("digest") or "")
                text = f"registry {ref} = v{version}" + (f" ({digest[:19]})" if digest else "")
            elif source == "git":
                text = f"git:{ref}"
            else:
                text = f"{source} {ref}"
        return {
            "baseline": text,
            "baseline-source": source_out,
            "baseline-ref": ref,
            "baseline-version": version,
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "record") -> GateRecord:
        rec = super().from_dict(data, source=source)
        if "metrics" in rec.candidate:
            validate_metrics(rec.candidate["metrics"], source, "candidate.metrics")
        if rec.baseline.get("metrics") is not None:  # null: there was no baseline (first run, `none`)
            validate_metrics(rec.baseline["metrics"], source, "baseline.metrics")
        for i, result in enumerate(rec.results):
            problem = gate_result_problem(result)
            if problem:
                raise UserError(f"results[{i}]{problem}", where=source)
        return rec


# What each gate result carries (lepton_ci/gate_rules.py `_result`): key -> (JSON types, may be null,
# required). The numbers are null where a rule had nothing to compare ("no baseline", a metric missing
# from the candidate); keys a newer lepton-ci adds are kept and not checked.
GATE_RESULT_FIELDS: dict[str, tuple[tuple[type, ...], bool, bool]] = {
    "metric": ((str,), False, True),
    "rule": ((str,), False, True),
    "passed": ((bool,), False, True),
    "threshold": ((int, float), True, True),
    "reason": ((str,), False, True),
    "observed": ((int, float), True, False),
    "baseline": ((int, float), True, False),
    "delta": ((int, float), True, False),
    "direction": ((str,), False, False),
}


def gate_result_problem(result: Any) -> str | None:
    """Why one entry of a gate record's `results` cannot be shown or trusted (a suffix for `results[i]`)."""
    if not isinstance(result, dict):
        return f" must be an object, got {_type_name(result)}"
    for key, (types, nullable, required) in GATE_RESULT_FIELDS.items():
        if key not in result:
            if required:
                return f" lacks {key!r}"
            continue
        value = result[key]
        if value is None:
            if not nullable:
                return f".{key} must be {_expected_name(types)}, got null"
        elif types == (int, float):
            problem = number_problem(value)
            if problem:
                return f".{key} {problem}"
        elif not isinstance(value, types):
            return f".{key} must be {_expected_name(types)}, got {_type_name(value)}"
    return None


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

    DIGEST_FORM: ClassVar[str] = "lepton-ci/model-version/v1"

    def manifest(self) -> dict[str, Any]:
        """The content the version digest covers: named fields under a form name of their own, so the
        digest stays the same when the record class gains a field or a schema version."""
        return {
            "form": self.DIGEST_FORM,
            "name": self.name,
            "version": self.version,
            "artifacts": self.artifacts,
            "artifacts_digest": self.artifacts_digest,
            "metadata": self.metadata,
            "created": self.created,
        }

    def legacy_manifest(self) -> dict[str, Any]:
        """What lepton-ci 0.1 hashed: the whole record but the digest, schema version included."""
        body = self.to_dict()
        body.pop("digest", None)
        body["schema_version"] = 1
        return body

    def compute_digest(self) -> str:
        return "sha256:" + sha256_bytes(canonical_json(self.manifest()))

    def digest_matches(self) -> bool:
        """True when `digest` covers this content, in the current form or the 0.1 form (both hash every
        field, so accepting either gives up nothing)."""
        if self.digest == self.compute_digest():
            return True
        return self.digest == "sha256:" + sha256_bytes(canonical_json(self.legacy_manifest()))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "record") -> ModelVersion:
        rec = super().from_dict(data, source=source)
        validate_artifacts(rec.artifacts, source)
        return rec

    @property
    def run(self) -> dict[str, Any] | None:
        """The run record stored with the version (None when absent or not an object)."""
        run = self.metadata.get("run") if isinstance(self.metadata, dict) else None
        return run if isinstance(run, dict) else None

    @property
    def gate(self) -> dict[str, Any] | None:
        """The gate record stored with the version, as stored (deploy refuses one that is not a record)."""
        return self.metadata.get("gate") if isinstance(self.metadata, dict) else None

    @property
    def metrics(self) -> dict[str, Any]:
        """The run's metrics, unchecked (callers that compare them validate them: see steps/gate.py)."""
        metrics = (self.run or {}).get("metrics")
        return dict(metrics) if isinstance(metrics, dict) else {}


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
    image: str = ""
    state: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    # The SLO watch (deploy.slo): source, bounds, every sample, passed, reason; None when none ran.
    slo: dict[str, Any] | None = None

    SCHEMA_VERSION: ClassVar[int] = 2

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "record") -> Deployment:
        if isinstance(data, dict) and "process" in data and "state" not in data:  # schema 1: local-only field
            data = {**data, "state": data["process"]}
            data.pop("process")
        rec = super().from_dict(data, source=source)  # also: `previous` is an object or null
        for i, check in enumerate(rec.health):
            if not isinstance(check, dict):
                raise UserError(
                    f"deployment record field 'health'[{i}] must be an object, got {_type_name(check)}", where=source
                )
        return rec

    @property
    def process(self) -> dict[str, Any]:
        """The local target's state (pid, port, log); other targets keep theirs in `state` too."""
        return self.state


@dataclass
class ImageRecord(Record):
    """`.lepton/image.json`, written by `build`: the serving image made for one model version, pinned by digest
    (`image` is REPOSITORY@sha256:...), how it was made (`mode` "full" or "model-only", on which `base`), and
    the bytes it took (`size_bytes` of all its layers, `pushed_bytes` actually sent to the registry)."""

    KIND: ClassVar[str] = "image"

    image: str = ""
    digest: str = ""
    tags: list[str] = field(default_factory=list)
    mode: str = "full"
    base: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    lepton_ci: str = ""
    created: str = ""
    size_bytes: int = 0
    pushed_bytes: int = 0
    pushed: bool = False


def image_record_path(root: Path) -> Path:
    """Where `build` leaves the image it made, for deploy and report in the same workspace."""
    return root / ".lepton" / "image.json"


def tagged_version_path(root: Path) -> Path:
    """Where `tag` leaves the version it created, for deploy and report in the same workspace."""
    return root / ".lepton" / "version.json"


def read_tagged_version(root: Path) -> ModelVersion | None:
    path = tagged_version_path(root)
    return ModelVersion.read(path) if path.is_file() else None
