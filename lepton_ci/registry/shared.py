"""Backend-neutral registry logic: one implementation of `Registry` over any `Storage`.

Everything a backend could get subtly wrong lives here, once, so file:// and oci:// cannot disagree:
- names and aliases (validated with `fullmatch`: no trailing newline, no control character);
- reference resolution (`latest`, `N`/`vN`, a `sha256:` digest or a prefix of at least 4 hex digits,
  an alias), with `NotFound` only for the positive answer "the registry holds no such thing";
- verification of every version read from storage (digests, name and number, safe artifact paths,
  `metadata.model_file`), so a damaged or forged manifest is refused, never returned;
- the idempotent-push rule, the hash-chained alias history and the rollback stack;
- `fetch` that hashes while it copies and never trusts bytes it has not hashed;
- `check` (with an optional per-version verifier hook for gate signatures) and `gc`.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from lepton_ci import progress
from lepton_ci.errors import LeptonError, NotFound, RegistryError, TransientError, UserError
from lepton_ci.fsutil import JsonProblem, canonical_json, loads_strict, sha256_bytes, short_repr
from lepton_ci.records import ModelVersion, artifacts_digest
from lepton_ci.registry.base import AliasEvent, GcItem, Interrupted, Problem, PushResult, Storage, Stored, Verifier
from lepton_ci.timeutil import utcnow

# `fullmatch` only: `re.match` with `$` accepts a trailing newline ("digits\n").
READ_BUFFER = 256 * 1024  # measured: 256-512 KiB reads hash and copy fastest here (they stay in L2)
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
ALIAS_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
HEX64_RE = re.compile(r"[0-9a-f]{64}")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
NUMBER_REF_RE = re.compile(r"v?([0-9]{1,18})")
MIN_PREFIX_HEX = 4
ACTIONS = ("move", "rollback")
# `latest` is a reference of its own; on oci:// `lepton-history…` are the history's tags and v<N>-<digest12>
# are version tags, so an alias may not take those names (on any backend, so a registry can move between them).
RESERVED_ALIASES = ("latest",)
VERSION_LIKE_RE = re.compile(r"v[0-9].*|lepton-.*")


# --- names ----------------------------------------------------------------------------------------------


def check_name(name: Any) -> str:
    """A model name as storage may use it (a path component, an OCI repository part); else UserError."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise UserError(
            f"model name {short_repr(name, 130)} is not valid (lower case letters, digits, . _ -; at most 128)"
        )
    return name


def check_alias(alias: Any) -> str:
    """An alias name; `latest` is reserved because it is a reference of its own."""
    if (
        not isinstance(alias, str)
        or not ALIAS_RE.fullmatch(alias)
        or alias in RESERVED_ALIASES
        or VERSION_LIKE_RE.fullmatch(alias)
    ):
        raise UserError(
            f"alias {short_repr(alias)} is not valid (lower case letter first, then letters, digits, _ -; not "
            "'latest', not lepton-…, which lepton-ci keeps for itself, and not v<digit>…, which reads as a version)"
        )
    return alias


def artifact_path_problem(path: Any) -> str | None:
    """Why `path` may not name a file inside a version, or None. Checked on push and on every read,
    because `fetch` joins it to a destination directory: it must stay inside, on every platform."""
    if not isinstance(path, str) or not path:
        return f"artifact path {short_repr(path)} is not a non-empty string"
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return f"artifact path {short_repr(path)} contains a control character"
    if "\\" in path:
        return f"artifact path {short_repr(path)} contains a backslash"
    if path.startswith("/") or re.match(r"[A-Za-z]:", path):
        return f"artifact path {short_repr(path)} is absolute"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return f"artifact path {short_repr(path)} escapes the version or is not normalised (empty, '.' or '..' part)"
    return None


# --- versions -------------------------------------------------------------------------------------------


def manifest_bytes(mv: ModelVersion) -> bytes:
    """The stored form of a version (the same layout `atomic_write_json` writes)."""
    return (json.dumps(mv.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()


def parse_manifest(data: bytes, where: str) -> ModelVersion:
    """Bytes from storage -> ModelVersion, unverified; anything unparseable is a RegistryError."""
    try:
        obj = loads_strict(data)  # the one strict reader (fsutil): UTF-8, finite numbers, bounded nesting
    except JsonProblem as exc:
        raise RegistryError(f"{where}: version manifest is damaged (not JSON: {exc})") from None
    try:
        return ModelVersion.from_dict(obj, source=where)
    except UserError as exc:
        raise RegistryError(f"version manifest is damaged: {exc.message}", where=exc.where) from None


def _artifact_problems(artifacts: Any) -> list[str]:
    if not isinstance(artifacts, list) or not artifacts:
        return ["the artifact list is empty or not a list"]
    problems: list[str] = []
    paths: list[str] = []
    for i, art in enumerate(artifacts):
        if not isinstance(art, dict):
            problems.append(f"artifacts[{i}] is not an object")
            continue
        why = artifact_path_problem(art.get("path"))
        if why:
            problems.append(why)
        else:
            paths.append(art["path"])
        if not isinstance(art.get("sha256"), str) or not HEX64_RE.fullmatch(art["sha256"]):
            problems.append(f"artifacts[{i}].sha256 is not a sha256 hex digest")
        size = art.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            problems.append(f"artifacts[{i}].size is not a byte count")
        if "stored" in art:
            from lepton_ci.registry.encryption import stored_problem

            why = stored_problem(art["stored"], i)
            if why:
                problems.append(why)
    seen: set[str] = set()
    for p in paths:
        if p in seen:
            problems.append(f"artifact path {short_repr(p)} appears twice")
        seen.add(p)
    for p in paths:  # "a" and "a/b" cannot both be files
        parts = p.split("/")
        for k in range(1, len(parts)):
            if "/".join(parts[:k]) in seen:
                problems.append(
                    f"artifact path {short_repr(p)} lies under another artifact file {short_repr('/'.join(parts[:k]))}"
                )
    return problems


def version_problems(mv: ModelVersion, name: str, number: int) -> list[str]:
    """Why a version read from where `name` v`number` is stored must not be trusted; [] when it can be.

    The digests prove the manifest is self-consistent; the rest proves it is usable safely: its paths
    stay inside the version and the model file it names is one of its files.
    """
    types = {"name": str, "digest": str, "artifacts_digest": str, "metadata": dict, "created": str}
    problems = [f"field {k!r} is not a {t.__name__}" for k, t in types.items() if not isinstance(getattr(mv, k), t)]
    if not isinstance(mv.version, int) or isinstance(mv.version, bool):
        problems.append("field 'version' is not an integer")
    if problems:
        return problems
    if mv.name != name or mv.version != number:
        problems.append(f"manifest says {mv.name} v{mv.version}, but it is stored as {name} v{number}")
    artifact_problems = _artifact_problems(mv.artifacts)
    problems += artifact_problems
    try:
        if not _digest_matches(mv):
            problems.append("manifest digest does not match its content (modified after tagging)")
    except (TypeError, ValueError) as exc:
        problems.append(f"manifest cannot be digested: {exc}")
    if artifact_problems:
        return problems
    if artifacts_digest(mv.artifacts) != mv.artifacts_digest:
        problems.append("artifacts digest does not match the artifact list")
    paths = {a["path"] for a in mv.artifacts}
    if "model_file" in mv.metadata:
        model_file = mv.metadata["model_file"]
        why = artifact_path_problem(model_file)
        if why:
            problems.append(f"metadata.model_file: {why}")
        elif model_file not in paths:
            problems.append(f"metadata.model_file {short_repr(model_file)} is not one of the version's artifacts")
    problems += _record_problems(mv.metadata, mv.artifacts_digest)
    return problems


def _digest_matches(mv: ModelVersion) -> bool:
    """The record decides which digest forms it accepts (the current one, and the 0.1 form for versions
    tagged before the form was fixed); fall back to `compute_digest` for a record class without that."""
    matches = getattr(mv, "digest_matches", None)
    return bool(matches()) if callable(matches) else mv.compute_digest() == mv.digest


def _record_problems(metadata: dict[str, Any], art_digest: str) -> list[str]:
    """The run and gate records inside a version must describe its artifacts: an artifact entry
    redirected to other bytes (with the version digests recomputed) no longer matches them."""
    problems = []
    run = metadata.get("run")
    if isinstance(run, dict) and run.get("artifacts_digest") and run.get("artifacts_digest") != art_digest:
        problems.append("the artifacts differ from the run record's (artifacts_digest of metadata.run)")
    gate = metadata.get("gate")
    candidate = gate.get("candidate") if isinstance(gate, dict) else None
    if isinstance(candidate, dict) and candidate.get("digest") and candidate.get("digest") != art_digest:
        problems.append("the artifacts differ from the ones the gate judged (metadata.gate.candidate.digest)")
    return problems


def referenced_blobs(data: bytes) -> set[str] | None:
    """Blob digests a manifest names, read leniently (even from a damaged manifest); None when the
    bytes are too damaged to tell, so `gc` can refuse rather than delete something still referenced."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("artifacts"), list):
        return None
    found = set()
    for a in obj["artifacts"]:
        if isinstance(a, dict):
            stored = a.get("stored")
            digest = stored.get("sha256") if isinstance(stored, dict) else a.get("sha256")
            if isinstance(digest, str):
                found.add(digest)
    return found


def stored_bytes(art: dict[str, Any]) -> dict[str, Any]:
    """An artifact entry as the bytes the storage holds: its `stored` blob when encrypted, else itself."""
    held = art.get("stored") or art
    return {"path": art["path"], "sha256": held["sha256"], "size": held["size"]}


# --- alias history --------------------------------------------------------------------------------------


def event_digest(event: dict[str, Any]) -> str:
    """What the next event's `prev` names: the digest of this event's canonical JSON (all its keys)."""
    return "sha256:" + sha256_bytes(canonical_json(event))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


EVENT_FIELDS: dict[str, tuple[Any, bool]] = {  # key -> (type check, required)
    "seq": (_is_int, True),
    "alias": (lambda v: isinstance(v, str) and bool(ALIAS_RE.fullmatch(v)), True),
    "action": (lambda v: v in ACTIONS, True),
    "to": (_is_int, True),
    "at": (lambda v: isinstance(v, str), True),
    "from": (lambda v: v is None or _is_int(v), False),
    "reason": (lambda v: isinstance(v, str), False),
    "actor": (lambda v: isinstance(v, str), False),
    "prev": (lambda v: v is None or (isinstance(v, str) and bool(DIGEST_RE.fullmatch(v))), False),
}


def parse_history(data: bytes | None, where: str) -> list[dict[str, Any]]:
    """The raw events of a history document (JSON lines), each checked for keys and types.

    Raw dicts, not AliasEvents: the chain digests cover every key, including ones a newer lepton-ci
    may add, and appending must write them back unchanged.
    """
    if data is None:
        return []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RegistryError(f"{where}: alias history is damaged (not UTF-8); run `lepton-ci registry check`") from None
    events = []
    for i, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            event = loads_strict(line)
        except JsonProblem as exc:
            raise RegistryError(
                f"{where}:{i}: alias history is damaged (not JSON: {exc}); run `lepton-ci registry check`"
            ) from None
        if not isinstance(event, dict):
            raise RegistryError(f"{where}:{i}: alias history is damaged (an event is not a JSON object)")
        for key, (valid, required) in EVENT_FIELDS.items():
            if key not in event:
                if required:
                    raise RegistryError(f"{where}:{i}: alias history is damaged (event lacks {key!r})")
            elif not valid(event[key]):
                raise RegistryError(f"{where}:{i}: alias history is damaged ({key!r} is {short_repr(event[key])})")
        events.append(event)
    return events


def chain_breaks(events: list[dict[str, Any]]) -> list[int]:
    """Indexes (0-based) of events whose `seq` or `prev` does not continue the chain."""
    breaks = []
    for i, e in enumerate(events):
        expected = event_digest(events[i - 1]) if i else None
        if e.get("prev") != expected or e.get("seq") != i + 1:
            breaks.append(i)
    return breaks


def current_aliases(events: list[dict[str, Any]]) -> dict[str, int]:
    current: dict[str, int] = {}
    for e in events:
        current[e["alias"]] = e["to"]
    return current


def alias_stack(events: list[dict[str, Any]], alias: str) -> list[int]:
    """Targets the alias has had, newest last, with rolled-back moves removed: rollback goes to [-2]."""
    stack: list[int] = []
    for e in events:
        if e["alias"] != alias:
            continue
        if e["action"] == "rollback":
            if stack:
                stack.pop()
        else:
            stack.append(e["to"])
    return stack


def history_text(events: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(e, sort_keys=True) + "\n" for e in events).encode()


def actor() -> str:
    """Who moved an alias, as the CI names them."""
    for var in ("GITHUB_ACTOR", "GITLAB_USER_LOGIN"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


# --- helpers for messages ---------------------------------------------------------------------------------


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def human_age(seconds: float) -> str:
    if seconds < 120:
        return f"{int(seconds)} s"
    if seconds < 7200:
        return f"{int(seconds // 60)} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


# --- the registry ---------------------------------------------------------------------------------------


class ModelRegistry:
    """`Registry` over a `Storage`: the only class the steps get from `open_registry`."""

    # The storage a backend's subclass binds (`local.LocalRegistry`: `LocalStorage`); see `open`.
    storage_class: ClassVar[type[Storage] | None] = None

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.url = storage.url

    @classmethod
    def open(cls, url: str, base_dir: Path, *, create: bool = False) -> ModelRegistry:
        """The registry at `url` over this class's storage; what `open_registry` calls for a table entry."""
        if cls.storage_class is None:
            raise RegistryError(f"{cls.__name__} names no storage class")
        storage = cls.storage_class.from_url(url, base_dir, create=create)
        if not isinstance(storage, Storage):
            raise RegistryError(
                f"{cls.__name__}: {type(storage).__name__} does not implement the registry Storage protocol"
            )
        return cls(storage)

    # reads

    def models(self) -> list[str]:
        return sorted(n for n in self.storage.models() if NAME_RE.fullmatch(n))

    def version_numbers(self, name: str) -> list[int]:
        return sorted(self.storage.version_numbers(check_name(name)))

    def _read(self, name: str, number: int) -> ModelVersion:
        """One verified version; the number must be listed (a listed version that cannot be read is damage)."""
        return self._read_raw(name, number)[0]

    def _read_raw(self, name: str, number: int) -> tuple[ModelVersion, bytes]:
        """`_read`, with the stored bytes the version was parsed from (what `copy_to` writes elsewhere)."""
        where = self.storage.manifest_location(name, number)
        data = self.storage.read_manifest(name, number)
        if data is None:
            raise RegistryError(f"version {number} of {name!r} is listed but its manifest {where} is missing")
        mv = parse_manifest(data, where)
        problems = version_problems(mv, name, number)
        if problems:
            more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
            raise RegistryError(
                f"{name} v{number} ({where}) is refused: {problems[0]}{more}; run `lepton-ci registry check`"
            )
        return mv, data

    def _complete(self, name: str, numbers: Sequence[int]) -> Iterator[tuple[ModelVersion, bytes]]:
        """The versions among `numbers` (and their stored bytes), in order, passing over writes that never
        completed (`Interrupted`)."""
        for n in numbers:
            try:
                yield self._read_raw(name, n)
            except Interrupted:
                continue

    def versions(self, name: str) -> list[ModelVersion]:
        return [mv for mv, _ in self._complete(name, self.version_numbers(name))]

    def get(self, name: str, ref: str | int) -> ModelVersion:
        """Resolve a reference. `NotFound` only when the registry was read and holds no such version."""
        check_name(name)
        if isinstance(ref, bool) or not isinstance(ref, (int, str)):
            raise RegistryError(f"reference {short_repr(ref)} is not a version number, alias, digest or 'latest'")
        text = str(ref)
        number_ref = NUMBER_REF_RE.fullmatch(text)
        # checked before reading: a malformed ref is never "not found"
        if not (text == "latest" or number_ref or text.startswith("sha256:")) and not ALIAS_RE.fullmatch(text):
            raise RegistryError(
                f"reference {short_repr(text)} is not a version number (3 or v3), an alias, "
                f"a sha256: digest or 'latest'"
            )
        if text.startswith("sha256:"):
            hexpart = text[len("sha256:") :]
            if len(hexpart) < MIN_PREFIX_HEX:
                raise RegistryError(
                    f"digest prefix {short_repr(text)} is too short "
                    f"(give at least {MIN_PREFIX_HEX} hex digits after sha256:)"
                )
            if not re.fullmatch(r"[0-9a-f]{1,64}", hexpart):
                raise RegistryError(f"{short_repr(text)} is not a sha256 digest (lower-case hex after sha256:)")
        numbers = self.version_numbers(name)
        if not numbers:
            if self._events(name):  # aliases moved to versions that are gone: damage, not a first run
                raise RegistryError(
                    f"model {name!r} has an alias history but no versions in {self.url}; run `lepton-ci registry check`"
                )
            raise NotFound(f"model {name!r} has no versions in {self.url}")
        if text == "latest":
            newest = next(self._complete(name, list(reversed(numbers))), None)
            if newest is None:
                raise NotFound(f"model {name!r} has no complete version in {self.url}")
            return newest[0]
        if number_ref:
            n = int(number_ref.group(1))
            if n not in numbers:
                raise NotFound(f"model {name!r} has no version {n} (versions: 1..{numbers[-1]})")
            return self._read(name, n)
        if text.startswith("sha256:"):
            return self._by_digest(name, text)
        aliases = self.aliases(name)
        if text in aliases:
            target = aliases[text]
            if target not in numbers:
                raise RegistryError(
                    f"alias {short_repr(text)} of {name!r} points at version {target}, "
                    f"which is missing; "
                    f"run `lepton-ci registry check`"
                )
            return self._read(name, target)
        known = ", ".join(sorted(aliases)) or "none"
        raise NotFound(f"model {name!r} has no alias {short_repr(text)} (aliases: {known}; or give a version number)")

    def _by_digest(self, name: str, text: str) -> ModelVersion:
        found = self.versions(name)
        exact = [v for v in found if v.digest == text]
        if exact:
            return exact[0]
        matches = [v for v in found if v.digest.startswith(text)]
        if len(matches) > 1:
            which = ", ".join(f"v{v.version}" for v in matches)
            raise RegistryError(f"digest prefix {text} of model {name!r} is ambiguous ({which}); give more digits")
        if matches:
            return matches[0]
        raise NotFound(f"model {name!r} has no version with digest {text}")

    # alias history

    def _events(self, name: str) -> list[dict[str, Any]]:
        """The history, parsed and chain-verified: an alias is never read from a broken chain."""
        where = self.storage.history_location(check_name(name))
        events = parse_history(self.storage.read_history(name), where)
        breaks = chain_breaks(events)
        if breaks:
            raise RegistryError(
                f"{where}: alias history event #{breaks[0] + 1} breaks the hash chain "
                f"(an entry was changed, lost or reordered); run `lepton-ci registry check`"
            )
        return events

    def history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        return [AliasEvent.from_dict(e) for e in self._events(name) if alias is None or e["alias"] == alias]

    def aliases(self, name: str) -> dict[str, int]:
        return current_aliases(self._events(name))

    def _move(self, name: str, alias: str, version: int, reason: str, action: str = "move") -> AliasEvent:
        """Append one move; the caller holds the model's lock."""
        events = self._events(name)
        event = AliasEvent(
            seq=len(events) + 1,
            alias=alias,
            action=action,
            to=version,
            from_=current_aliases(events).get(alias),
            at=utcnow(),
            reason=reason,
            actor=actor(),
            prev=event_digest(events[-1]) if events else None,
        )
        new = event.to_dict()
        canonical_json(new)  # a reason or actor that is not Unicode text (a lone surrogate) is a UserError now,
        # not a history that every later read refuses
        self.storage.write_history(name, history_text(events + [new]))
        self.storage.publish_alias(name, alias, version)
        return event

    def move_alias(self, name: str, alias: str, version: int, *, reason: str = "") -> AliasEvent:
        check_name(name)
        check_alias(alias)
        with self.storage.lock(name):
            if version not in self.version_numbers(name):
                raise NotFound(f"model {name!r} has no version {version}")
            self._read(name, version)  # never point an alias at a version reads would refuse
            return self._move(name, alias, version, reason)

    def rollback(self, name: str, alias: str, *, reason: str = "") -> AliasEvent:
        check_name(name)
        with self.storage.lock(name):
            events = self._events(name)
            if alias not in current_aliases(events):
                raise NotFound(f"model {name!r} has no alias {short_repr(alias)}")
            stack = alias_stack(events, alias)
            if len(stack) < 2:
                raise RegistryError(f"alias {short_repr(alias)} of {name!r} has no previous target to roll back to")
            self._read(name, stack[-2])
            return self._move(name, alias, stack[-2], reason or "rollback", action="rollback")

    # writes

    def push(
        self,
        name: str,
        files: list[tuple[str, Path]],
        metadata: dict[str, Any],
        *,
        aliases: Sequence[str] = (),
        reason: str = "",
        sha256: dict[str, str] | None = None,
    ) -> PushResult:
        """Register files as the next version; pushing identical files and metadata again returns the existing one.

        `sha256` maps artifact paths to the digests the caller has verified (tag: the run record's), so the
        storage can skip blobs it holds and upload without hashing first; the storage still proves the bytes."""
        check_name(name)
        if not files:
            raise UserError("no artifact files to register (check train.artifacts in lepton.yml)")
        for alias in aliases:
            check_alias(alias)
        if not isinstance(metadata, dict):
            raise UserError("version metadata must be a JSON object")
        try:
            canonical_json(metadata)
        except (TypeError, ValueError) as exc:
            raise UserError(f"version metadata cannot be stored as JSON: {exc}") from None
        rels = [rel for rel, _ in files]
        for rel in rels:
            why = artifact_path_problem(rel)
            if why:
                raise UserError(why)
        model_file = metadata.get("model_file")
        if "model_file" in metadata and model_file not in rels:
            raise UserError(
                f"model file {short_repr(model_file)} is not one of the artifacts ({', '.join(rels)}); "
                f"set model.file to an artifact path"
            )
        from lepton_ci.registry import encryption

        key = encryption.load_key()
        stored = []
        for rel, src in files:
            if not Path(src).is_file():
                raise UserError(f"artifact not found: {src}")
            if key is None:
                digest, size = self.storage.put_blob(name, Path(src), (sha256 or {}).get(rel))
                stored.append({"path": rel, "sha256": digest, "size": size})
                continue
            with tempfile.TemporaryDirectory(prefix="lepton-enc-") as tmp:
                sealed, plain, plain_size, sealed_sha256 = key.encrypt_file(Path(src), Path(tmp))
                digest, size = self.storage.put_blob(name, sealed, sealed_sha256)
            stored.append(
                {
                    "path": rel,
                    "sha256": plain,
                    "size": plain_size,
                    "stored": {"sha256": digest, "size": size, "cipher": encryption.CIPHER, "key_id": key.key_id},
                }
            )
        problems = _artifact_problems(stored)
        if problems:
            raise UserError(f"artifacts cannot be registered: {problems[0]}")
        art_digest = artifacts_digest(stored)
        problems = _record_problems(metadata, art_digest)
        if problems:
            raise UserError(f"artifacts changed while tagging: {problems[0]}")
        with self.storage.lock(name):
            numbers = self.version_numbers(name)
            for existing, _ in self._complete(name, list(reversed(numbers))):
                # A CI rerun of the same tag job (same files, same run and gate records) is idempotent.
                if existing.artifacts_digest == art_digest and canonical_json(existing.metadata) == canonical_json(
                    metadata
                ):
                    events = [
                        self._move(name, a, existing.version, reason)
                        for a in aliases
                        if self.aliases(name).get(a) != existing.version
                    ]
                    return PushResult(existing, created=False, aliases=events)
            number = (numbers[-1] if numbers else 0) + 1
            mv = ModelVersion(
                name=name,
                version=number,
                artifacts=stored,
                artifacts_digest=art_digest,
                metadata=metadata,
                created=utcnow(),
            )
            mv.digest = mv.compute_digest()
            problems = version_problems(mv, name, number)
            if problems:  # never write a version that every read would refuse
                raise UserError(f"version cannot be registered: {problems[0]}")
            if not self.storage.create_manifest(name, number, manifest_bytes(mv)):
                raise RegistryError(f"version {number} of {name!r} appeared while writing; retry")
            events = [self._move(name, a, number, reason) for a in aliases]
        return PushResult(mv, created=True, aliases=events)

    # blobs

    def _verify_blob(self, name: str, art: dict[str, Any], sink: Any, what: str) -> None:
        """Stream a blob into `sink` (a writable file or None), hashing as it goes; raise unless its bytes
        are exactly the ones the manifest names. Stops early once it has read more than the manifest's size.

        An encrypted file (an artifact with `stored`) is decrypted on the way, so the plaintext is what gets
        hashed and written. Without the key, only a check (`sink` None) can proceed: it verifies the stored
        bytes against `stored`, which proves nothing was changed, though not what they decrypt to."""
        stored = art.get("stored")
        if stored is not None:
            from lepton_ci.registry import encryption

            if sink is None and encryption.load_key() is None:
                art, stored = stored_bytes(art), None
        stream = self.storage.open_blob(name, stored["sha256"] if stored else art["sha256"])
        if stream is None:
            raise RegistryError(
                f"blob {art['sha256'][:12]} of {what} ({art['path']}) is missing; run `lepton-ci registry check`"
            )
        if stored is not None:
            label = f"{what} ({art['path']})"
            stream = encryption.key_for(stored, label).reader(stream, label)
        h = hashlib.sha256()
        size = 0
        buf = bytearray(READ_BUFFER)  # one buffer, filled in place: no copy per chunk (what makes pulls fast)
        view = memoryview(buf)
        reader: Any = stream  # every stream a storage returns is a file object with readinto (BinaryIO omits it)
        with stream:
            while True:
                try:
                    n = reader.readinto(buf)
                except OSError as exc:
                    raise TransientError(
                        f"reading blob {art['sha256'][:12]} of {what} failed: {exc.strerror or exc}"
                    ) from None
                if not n:
                    break
                chunk = view[:n]
                h.update(chunk)
                size += n
                if sink is not None:
                    if size > art["size"]:
                        break  # never copy more than the manifest promised
                    sink.write(chunk)
        if h.hexdigest() != art["sha256"] and (sink is None or size <= art["size"]):
            raise RegistryError(
                f"blob {art['sha256'][:12]} of {what} ({art['path']}) does not match its digest (corrupt)"
            )
        if size != art["size"]:
            raise RegistryError(
                f"blob {art['sha256'][:12]} of {what} ({art['path']}) has another size than its "
                f"manifest entry ({art['size']} bytes): redirected, truncated or corrupt; "
                f"run `lepton-ci registry check`"
            )

    def fetch(self, name: str, version: int | str, dest: Path) -> Path:
        """Materialise a version's files under dest. Each file is hashed while it is copied into a temporary
        name and renamed into place only if its bytes match: nothing unverified ever appears under dest."""
        mv = self.get(name, version)
        what = f"{name} v{mv.version}"
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for art in mv.artifacts:
            target = dest.joinpath(*art["path"].split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out, progress.transfer(f"fetch {art['path']}", art["size"]) as advance:
                    self._verify_blob(name, art, progress.CountingWriter(out, advance), what)
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        return dest

    def copy_to(self, dest: ModelRegistry, names: Sequence[str] | None = None) -> list[tuple[str, int, int]]:
        """Copy models, byte for byte, into another registry (`registry copy file://… oci://…`): every version
        under its own number with the same manifest bytes (so digests and gate signatures still verify), its
        blobs verified on the way, then the alias history document as it is (the hash chain intact) and the
        aliases. A model that already has versions or history in `dest` is refused, never merged.
        Returns (model, versions, history events) per model copied."""
        done = []
        for name in sorted(names) if names is not None else self.models():
            check_name(name)
            numbers = self.version_numbers(name)
            if not numbers:
                raise NotFound(f"model {name!r} has no versions in {self.url}")
            events = self._events(name)  # chain-verified before anything is written
            with dest.storage.lock(name):
                if dest.version_numbers(name) or dest.storage.read_history(name) is not None:
                    raise RegistryError(f"model {name!r} already exists in {dest.url}; copy only into an empty place")
                for mv, raw in self._complete(name, numbers):  # raw: the very bytes, unknown fields and all
                    number = mv.version
                    with tempfile.TemporaryDirectory(prefix="lepton-copy-") as tmp:
                        for entry in mv.artifacts:
                            # An encrypted file travels as its stored bytes (verified, never decrypted): the
                            # copy needs no key and names the same blobs.
                            art = stored_bytes(entry)
                            part = Path(tmp) / art["sha256"]
                            with open(part, "wb") as out:
                                self._verify_blob(name, art, out, f"{name} v{number}")
                            digest, size = dest.storage.put_blob(name, part)
                            if (digest, size) != (art["sha256"], art["size"]):
                                raise RegistryError(f"{dest.url} stored {art['path']} of {name} v{number} differently")
                    if not dest.storage.create_manifest(name, number, raw):
                        raise RegistryError(f"version {number} of {name!r} appeared in {dest.url} while copying")
                if events:
                    dest.storage.write_history(name, history_text(events))
                    for alias, number in current_aliases(events).items():
                        dest.storage.publish_alias(name, alias, number)
            done.append((name, len(numbers), len(events)))
        return done

    # integrity

    def check(self, verifier: Verifier | None = None, names: Sequence[str] | None = None) -> list[Problem]:
        """Every problem in the registry: errors (damage, forgery) and warnings (leftovers gc removes).

        `verifier` is called with every version that passed the digest checks (for example to verify the
        gate signature with a public key) and returns a problem message or None. `names` limits the check
        to those models (a registry that cannot list its repositories, such as GHCR, needs it); then blobs
        are not checked for being referenced, since other models' versions may reference them.
        """
        problems: list[Problem] = []
        referenced: set[str] = set()
        blob_verdicts: dict[tuple[str, int], str | None] = {}
        for name in self.storage.models() if names is None else [check_name(n) for n in names]:
            if not NAME_RE.fullmatch(name):
                problems.append(Problem(f"model {name!r}", "not a valid model name (not written by lepton-ci)"))
            numbers = self.storage.version_numbers(name)
            for number in numbers:
                where = f"{name} v{number}"
                try:
                    data = self.storage.read_manifest(name, number)
                    if data is None:
                        raise RegistryError("listed, but its manifest is missing")
                    referenced |= referenced_blobs(data) or set()
                    mv = parse_manifest(data, self.storage.manifest_location(name, number))
                except Interrupted as exc:
                    problems.append(Problem(where, f"{exc} (never acknowledged; reads pass over it)", "warning"))
                    continue
                except (RegistryError, TransientError) as exc:
                    problems.append(Problem(where, str(exc)))
                    continue
                found = version_problems(mv, name, number)
                problems += [Problem(where, msg) for msg in found]
                if not isinstance(mv.artifacts, list) or _artifact_problems(mv.artifacts):
                    continue
                for art in mv.artifacts:
                    key = (art["sha256"], art["size"])
                    if key not in blob_verdicts:
                        try:
                            self._verify_blob(name, art, None, where)
                            blob_verdicts[key] = None
                        except LeptonError as exc:
                            blob_verdicts[key] = _blob_problem(exc)
                    if blob_verdicts[key]:
                        problems.append(
                            Problem(where, f"blob {art['sha256'][:12]} ({art['path']}) {blob_verdicts[key]}")
                        )
                if verifier is not None and not found:
                    try:
                        message = verifier(mv)
                    except LeptonError as exc:
                        message = str(exc)
                    if message:
                        problems.append(Problem(where, message))
            problems += self._check_history(name, set(numbers))
        if names is not None:
            return problems
        for blob in self.storage.blobs():
            if blob.key not in referenced:
                problems.append(
                    Problem(
                        f"blob {blob.key[:12]}",
                        f"not referenced by any version (left by an interrupted "
                        f"tag; {human_size(blob.size)}; `lepton-ci registry gc` removes it)",
                        "warning",
                    )
                )
        temps = self.storage.temp_files()
        if temps:
            total = sum(t.size for t in temps)
            problems.append(
                Problem(
                    "temporary files",
                    f"{len(temps)} file(s), {human_size(total)}, left by interrupted "
                    f"writes; `lepton-ci registry gc` removes them",
                    "warning",
                )
            )
        return problems

    def _check_history(self, name: str, numbers: set[int]) -> list[Problem]:
        if not NAME_RE.fullmatch(name):
            return []
        try:
            events = parse_history(self.storage.read_history(name), self.storage.history_location(name))
        except (RegistryError, TransientError) as exc:
            return [Problem(f"{name} history", str(exc))]
        problems = [
            Problem(f"{name} history #{i + 1}", "hash chain broken (an entry was changed, lost or reordered)")
            for i in chain_breaks(events)
        ]
        for i, e in enumerate(events):
            if e["to"] not in numbers:
                problems.append(
                    Problem(f"{name} history #{i + 1}", f"alias {e['alias']!r} points at missing version {e['to']}")
                )
        try:
            writes = self.storage.history_writes(name)
        except (RegistryError, TransientError) as exc:
            return problems + [Problem(f"{name} history", str(exc))]
        for count, digest in sorted(set(writes)):
            if count > len(events):
                why = f"has {count} events, today's history only {len(events)}: later moves were lost"
            elif hashlib.sha256(history_text(events[:count])).hexdigest() != digest:
                why = "is not a prefix of today's history: a concurrent writer forked it"
            else:
                continue
            problems.append(
                Problem(
                    f"{name} history", f"an earlier history write ({digest[:12]}) {why} (writers without the CI lock)"
                )
            )
        return problems

    def gc(self, *, apply: bool = False, min_age_s: float = 3600.0) -> list[GcItem]:
        """Blobs no version references and temporary files left by interrupted writes: listed, and with
        `apply` deleted. Anything younger than `min_age_s` is kept (a running tag may be about to reference
        it); a blob any manifest names, even a damaged one, is never a candidate."""
        referenced: set[str] = set()
        for name in self.storage.models():
            for number in self.storage.version_numbers(name):
                try:
                    data = self.storage.read_manifest(name, number)
                except Interrupted:
                    continue
                if data is None:
                    continue
                refs = referenced_blobs(data)
                if refs is None:
                    raise RegistryError(
                        f"gc refused: {self.storage.manifest_location(name, number)} is too damaged to "
                        f"tell which blobs it references; run `lepton-ci registry check`"
                    )
                referenced |= refs
        candidates: list[Stored] = [b for b in self.storage.blobs() if b.key not in referenced]
        candidates += self.storage.temp_files()
        items = []
        for item in candidates:
            where = f"blob {item.key}" if item.kind == "blob" else item.key
            if item.age_s < min_age_s:
                action = f"kept: younger than {human_age(min_age_s)} (a running tag may own it)"
            elif apply:
                self.storage.delete(item)
                action = "deleted"
            else:
                action = "would delete"
            items.append(GcItem(item.kind, where, item.size, item.age_s, action))
        return items


def _blob_problem(exc: LeptonError) -> str:
    text = exc.message
    if "missing" in text:
        return "is missing"
    if "does not match" in text:
        return "is corrupt (its bytes do not match its digest)"
    if "another size" in text:
        return "has another size than its manifest entry (the entry was redirected or edited)"
    return f"cannot be read: {text}"
