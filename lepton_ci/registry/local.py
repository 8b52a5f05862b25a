"""The embedded file:// registry: content-addressed blobs, immutable versions, hash-chained alias history.

Crash safety comes from ordering: blobs first (atomic renames into content-addressed names), then the
version manifest (created exclusively, never replaced), then the alias history (atomically rewritten
under a per-model lock). A crash at any point leaves at worst unreferenced blobs, which `check` reports
as warnings and never as corruption.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from lepton_ci.errors import RegistryError, UserError
from lepton_ci.fsutil import atomic_write_bytes, atomic_write_json, canonical_json, sha256_bytes, sha256_file, CHUNK
from lepton_ci.records import ModelVersion, artifacts_digest
from lepton_ci.registry.base import AliasEvent, Problem, PushResult
from lepton_ci.timeutil import utcnow

MARKER = "lepton-registry.json"
LOCK_TIMEOUT_S = 60.0
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


def _actor() -> str:
    for var in ("GITHUB_ACTOR", "GITLAB_USER_LOGIN"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


def event_digest(event: dict[str, Any]) -> str:
    return "sha256:" + sha256_bytes(canonical_json(event))


class LocalRegistry:
    """A registry in a directory. Safe for concurrent writers on one machine (flock per model)."""

    def __init__(self, root: Path, *, create: bool = False) -> None:
        self.root = Path(root)
        self.url = f"file://{self.root}"
        marker = self.root / MARKER
        if marker.is_file():
            self._check_marker(marker)
            return
        if self.root.exists() and not self.root.is_dir():
            raise RegistryError(f"{self.root} is not a lepton-ci registry (it is a file, expected a directory)")
        if self.root.is_dir() and self._foreign_entries():
            if marker.is_file():  # another process created the registry while we looked
                self._check_marker(marker)
                return
            raise RegistryError(f"{self.root} is not a lepton-ci registry (no {MARKER}; refusing to write into it)")
        if not create:
            raise RegistryError(f"no registry at {self.root} (run `lepton-ci tag` to create one, or check --registry)")
        self.root.mkdir(parents=True, exist_ok=True)
        try:  # exclusive: of two jobs creating the registry at once, one writes the marker, both use it
            atomic_write_json(marker, {"kind": "lepton-registry", "schema_version": 1, "created": utcnow()},
                              exclusive=True)
        except FileExistsError:
            self._check_marker(marker)

    def _check_marker(self, marker: Path) -> None:
        try:
            info = json.loads(marker.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RegistryError(f"{marker} is damaged (not JSON); is this a lepton-ci registry?") from None
        if info.get("kind") != "lepton-registry":
            raise RegistryError(f"{self.root} is not a lepton-ci registry ({MARKER} has kind {info.get('kind')!r})")

    def _foreign_entries(self) -> list[str]:
        """Entries other than the marker being written: what makes a directory someone else's."""
        return [p.name for p in self.root.iterdir()
                if p.name != MARKER and not (p.name.startswith(f".{MARKER}.") and p.name.endswith(".tmp"))]

    # --- paths and validation -------------------------------------------------------------------------

    def _model_dir(self, name: str) -> Path:
        if not NAME_RE.match(name):
            raise UserError(f"model name {name!r} is not valid (lower case letters, digits, . _ -)")
        return self.root / "models" / name

    def _blob(self, digest_hex: str) -> Path:
        return self.root / "blobs" / "sha256" / digest_hex

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        d = self._model_dir(name)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / ".lock", "a+") as f:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise RegistryError(f"model {name!r} in {self.root} is locked by another process") from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # --- blobs ----------------------------------------------------------------------------------------

    def _store_blob(self, src: Path) -> tuple[str, int]:
        """Copy a file into the blob store, hashing as it goes; returns (hex digest, size)."""
        import hashlib

        tmp_dir = self.root / "blobs" / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=tmp_dir)
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
                while chunk := inp.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = h.hexdigest()
            target = self._blob(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                os.unlink(tmp)
            else:
                os.replace(tmp, target)
            return digest, size
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    # --- versions -------------------------------------------------------------------------------------

    def models(self) -> list[str]:
        d = self.root / "models"
        return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []

    def _version_numbers(self, name: str) -> list[int]:
        d = self._model_dir(name) / "versions"
        if not d.is_dir():
            return []
        return sorted(int(p.stem) for p in d.glob("*.json") if p.stem.isdigit())

    def _read_version(self, name: str, number: int) -> ModelVersion:
        path = self._model_dir(name) / "versions" / f"{number}.json"
        try:
            return ModelVersion.read(path)
        except UserError as exc:
            raise RegistryError(f"version {number} of {name!r} is unreadable: {exc}") from None

    def versions(self, name: str) -> list[ModelVersion]:
        return [self._read_version(name, n) for n in self._version_numbers(name)]

    def get(self, name: str, ref: str | int) -> ModelVersion:
        numbers = self._version_numbers(name)
        if not numbers:
            raise RegistryError(f"model {name!r} has no versions in {self.root}")
        text = str(ref)
        if text == "latest":
            return self._read_version(name, numbers[-1])
        m = re.fullmatch(r"v?(\d+)", text)
        if m:
            n = int(m.group(1))
            if n not in numbers:
                raise RegistryError(f"model {name!r} has no version {n} (versions: 1..{numbers[-1]})")
            return self._read_version(name, n)
        if text.startswith("sha256:"):
            found = self.versions(name)
            exact = [v for v in found if v.digest == text]
            if exact:
                return exact[0]
            if len(text) < len("sha256:") + 4:
                raise RegistryError(f"digest prefix {text!r} is too short (give at least 4 hex digits after sha256:)")
            matches = [v for v in found if v.digest.startswith(text)]
            if len(matches) > 1:
                which = ", ".join(f"v{v.version}" for v in matches)
                raise RegistryError(f"digest prefix {text} of model {name!r} is ambiguous ({which}); give more digits")
            if matches:
                return matches[0]
            raise RegistryError(f"model {name!r} has no version with digest {text}")
        aliases = self.aliases(name)
        if text in aliases:
            return self._read_version(name, aliases[text])
        known = ", ".join(sorted(aliases)) or "none"
        raise RegistryError(f"model {name!r} has no alias {text!r} (aliases: {known}; or give a version number)")

    def push(self, name: str, files: list[tuple[str, Path]], metadata: dict[str, Any], *,
             aliases: list[str] = (), reason: str = "") -> PushResult:
        """Register files as the next version; pushing identical files and metadata again returns the existing one."""
        if not files:
            raise UserError("no artifact files to register (check train.artifacts in lepton.yml)")
        for alias in aliases:
            self._check_alias(alias)
        stored = []
        for rel, src in files:
            if not Path(src).is_file():
                raise UserError(f"artifact not found: {src}")
            digest, size = self._store_blob(Path(src))
            stored.append({"path": rel, "sha256": digest, "size": size})
        art_digest = artifacts_digest(stored)
        with self._lock(name):
            for existing in self.versions(name):
                # A CI rerun of the same tag job (same files, same run and gate records) is idempotent.
                if existing.artifacts_digest == art_digest and canonical_json(existing.metadata) == canonical_json(metadata):
                    events = [self._move(name, a, existing.version, reason) for a in aliases
                              if self.aliases(name).get(a) != existing.version]
                    return PushResult(existing, created=False, aliases=events)
            numbers = self._version_numbers(name)
            number = (numbers[-1] if numbers else 0) + 1
            mv = ModelVersion(name=name, version=number, artifacts=stored, artifacts_digest=art_digest,
                              metadata=metadata, created=utcnow())
            mv.digest = mv.compute_digest()
            path = self._model_dir(name) / "versions" / f"{number}.json"
            try:
                atomic_write_json(path, mv.to_dict(), exclusive=True)
            except FileExistsError:  # another writer without our lock; never overwrite
                raise RegistryError(f"version {number} of {name!r} appeared while writing; retry") from None
            events = [self._move(name, a, number, reason) for a in aliases]
        return PushResult(mv, created=True, aliases=events)

    def fetch(self, name: str, version: int, dest: Path) -> Path:
        """Materialise a version's files under dest, verifying every digest."""
        mv = self.get(name, version)
        dest.mkdir(parents=True, exist_ok=True)
        for art in mv.artifacts:
            blob = self._blob(art["sha256"])
            if not blob.is_file():
                raise RegistryError(f"blob {art['sha256'][:12]} of {name} v{mv.version} ({art['path']}) is missing; run `lepton-ci registry check`")
            rel = Path(art["path"])
            if rel.is_absolute() or ".." in rel.parts:
                raise RegistryError(f"artifact path {art['path']!r} escapes the destination")
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(blob, target)
            if sha256_file(target) != art["sha256"]:
                raise RegistryError(f"blob for {art['path']} of {name} v{mv.version} does not match its digest")
        return dest

    # --- aliases --------------------------------------------------------------------------------------

    def _check_alias(self, alias: str) -> None:
        if not ALIAS_RE.match(alias) or alias == "latest":
            raise UserError(f"alias {alias!r} is not valid (lower case letter first, then letters, digits, _ -; not 'latest')")

    def _history_path(self, name: str) -> Path:
        return self._model_dir(name) / "history.jsonl"

    def _raw_history(self, name: str) -> list[dict[str, Any]]:
        path = self._history_path(name)
        if not path.is_file():
            return []
        out = []
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    raise RegistryError(f"{path}:{i}: alias history is damaged; run `lepton-ci registry check`") from None
        return out

    def history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        events = [AliasEvent.from_dict(e) for e in self._raw_history(name)]
        return [e for e in events if alias is None or e.alias == alias]

    def aliases(self, name: str) -> dict[str, int]:
        current: dict[str, int] = {}
        for e in self.history(name):
            current[e.alias] = e.to
        return current

    def _append(self, name: str, event: AliasEvent) -> AliasEvent:
        raw = self._raw_history(name)
        event.seq = len(raw) + 1
        event.prev = event_digest(raw[-1]) if raw else None
        text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in raw + [event.to_dict()])
        atomic_write_bytes(self._history_path(name), text.encode())
        return event

    def _move(self, name: str, alias: str, version: int, reason: str, action: str = "move") -> AliasEvent:
        current = self.aliases(name).get(alias)
        return self._append(name, AliasEvent(seq=0, alias=alias, action=action, to=version, from_=current,
                                             at=utcnow(), reason=reason, actor=_actor()))

    def move_alias(self, name: str, alias: str, version: int, *, reason: str = "") -> AliasEvent:
        self._check_alias(alias)
        with self._lock(name):
            if version not in self._version_numbers(name):
                raise RegistryError(f"model {name!r} has no version {version}")
            return self._move(name, alias, version, reason)

    def _alias_stack(self, name: str, alias: str) -> list[int]:
        """Targets the alias has had, newest last, with rolled-back moves removed."""
        stack: list[int] = []
        for e in self.history(name, alias):
            if e.action == "rollback":
                if stack:
                    stack.pop()
            else:
                stack.append(e.to)
        return stack

    def rollback(self, name: str, alias: str, *, reason: str = "") -> AliasEvent:
        with self._lock(name):
            if alias not in self.aliases(name):
                raise RegistryError(f"model {name!r} has no alias {alias!r}")
            stack = self._alias_stack(name, alias)
            if len(stack) < 2:
                raise RegistryError(f"alias {alias!r} of {name!r} has no previous target to roll back to")
            return self._move(name, alias, stack[-2], reason or "rollback", action="rollback")

    # --- integrity ------------------------------------------------------------------------------------

    def check(self) -> list[Problem]:
        problems: list[Problem] = []
        referenced: set[str] = set()
        for name in self.models():
            for number in self._version_numbers(name):
                where = f"{name} v{number}"
                try:
                    mv = self._read_version(name, number)
                except RegistryError as exc:
                    problems.append(Problem(where, str(exc)))
                    continue
                if mv.version != number or mv.name != name:
                    problems.append(Problem(where, f"manifest says {mv.name} v{mv.version}"))
                if mv.compute_digest() != mv.digest:
                    problems.append(Problem(where, "manifest digest does not match its content (modified after tagging)"))
                if artifacts_digest(mv.artifacts) != mv.artifacts_digest:
                    problems.append(Problem(where, "artifacts digest does not match the artifact list"))
                for art in mv.artifacts:
                    referenced.add(art["sha256"])
                    blob = self._blob(art["sha256"])
                    if not blob.is_file():
                        problems.append(Problem(where, f"blob {art['sha256'][:12]} ({art['path']}) is missing"))
                    elif sha256_file(blob) != art["sha256"]:
                        problems.append(Problem(where, f"blob {art['sha256'][:12]} ({art['path']}) is corrupt"))
            try:
                raw = self._raw_history(name)
            except RegistryError as exc:
                problems.append(Problem(f"{name} history", str(exc)))
                continue
            numbers = set(self._version_numbers(name))
            for i, e in enumerate(raw):
                expected = event_digest(raw[i - 1]) if i else None
                if e.get("prev") != expected or e.get("seq") != i + 1:
                    problems.append(Problem(f"{name} history #{i + 1}", "hash chain broken (an entry was changed, lost or reordered)"))
                if e.get("to") not in numbers:
                    problems.append(Problem(f"{name} history #{i + 1}", f"alias {e.get('alias')!r} points at missing version {e.get('to')}"))
        blob_dir = self.root / "blobs" / "sha256"
        if blob_dir.is_dir():
            for blob in blob_dir.iterdir():
                if blob.name not in referenced:
                    problems.append(Problem(f"blob {blob.name[:12]}", "not referenced by any version (left by an interrupted tag)", "warning"))
        return problems
