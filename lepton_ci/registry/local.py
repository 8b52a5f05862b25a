"""The embedded file:// registry storage: a blob store, manifest files, a history file and a lock.

Only storage primitives live here; what the bytes mean (verification, references, the history chain)
is in `shared.py`. Crash safety comes from ordering and atomic renames: blobs first (written under
`blobs/tmp/`, renamed into content-addressed names), then the version manifest (created exclusively,
never replaced), then the alias history (rewritten atomically under a per-model lock). A crash at any
point leaves at worst unreferenced blobs and temporary files, which `check` reports as warnings and
`gc` removes.

Every OSError becomes a one-line `RegistryError` (or `TransientError` for I/O failures that may pass):
a registry that cannot be read is never "empty".
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

from lepton_ci.errors import NotFound, RegistryError, TransientError, UserError
from lepton_ci.fsutil import (
    CHUNK,
    JsonProblem,
    atomic_write_bytes,
    atomic_write_json,
    exclusive_lock,
    loads_strict,
    short_repr,
)
from lepton_ci.limits import read_limited
from lepton_ci.registry.base import Stored
from lepton_ci.registry.shared import ModelRegistry
from lepton_ci.timeutil import utcnow

MARKER = "lepton-registry.json"
MARKER_SCHEMA = 1
MARKER_MAX_BYTES = 1 << 16  # the marker is three short fields; a bigger one is not ours
LOCK_TIMEOUT_S = 60.0
MANIFEST_RE = re.compile(r"([1-9][0-9]{0,17})\.json")
HEX64_RE = re.compile(r"[0-9a-f]{64}")
# What fsutil.atomic_write_bytes leaves when killed: ".<target name>.<random>.tmp" next to the target.
ATOMIC_TEMP_RE = re.compile(r"\..+\.tmp")
TRANSIENT_ERRNOS = {errno.EIO, errno.EAGAIN, errno.ETIMEDOUT, errno.ESTALE, errno.EINTR, errno.EBUSY}

F = TypeVar("F", bound=Callable[..., Any])


def _os_error(root: Path, exc: OSError) -> Exception:
    """One line for an OSError: transient kinds may pass on retry, the rest (EACCES, ENOSPC…) will not."""
    what = f"registry {root}: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return TransientError(what) if exc.errno in TRANSIENT_ERRNOS else RegistryError(what)


def _fs(method: F) -> F:
    """Turn an OSError escaping a storage primitive into a registry error (exit 2), never exit 70."""

    @functools.wraps(method)
    def wrapper(self: LocalStorage, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            raise _os_error(self.root, exc) from None

    return cast(F, wrapper)  # functools.wraps keeps the signature; mypy cannot see that


class LocalStorage:
    """A registry in a directory. Safe for concurrent writers on one machine (flock per model)."""

    url: str = ""

    @classmethod
    def from_url(cls, url: str, base_dir: Path, *, create: bool = False) -> LocalStorage:
        """file://PATH; a relative PATH is relative to `base_dir` (the directory of lepton.yml)."""
        raw = url[len("file://") :] if url.startswith("file://") else url
        if not raw:
            raise RegistryError(f"registry URL {short_repr(url)} names no directory (expected file://PATH)")
        return cls(Path(raw) if raw.startswith("/") else Path(base_dir) / raw, create=create)

    @_fs
    def __init__(self, root: Path, *, create: bool = False) -> None:
        self.root = Path(root)
        self.url = f"file://{self.root}"
        try:
            st = os.stat(self.root)
        except FileNotFoundError:
            st = None
        except NotADirectoryError:
            raise RegistryError(f"{self.root} is not a lepton-ci registry (a parent of it is a file)") from None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise RegistryError(f"{self.root} is not a lepton-ci registry (it is a file, expected a directory)")
        if st is not None:
            if self._read_marker():
                return
            if self._foreign_entries():
                if self._read_marker():  # another process created the registry while we looked
                    return
                raise RegistryError(f"{self.root} is not a lepton-ci registry (no {MARKER}; refusing to use it)")
        if not create:
            # Positive: the directory does not exist (or is empty), so nothing was ever tagged here.
            raise NotFound(f"no registry at {self.root} (run `lepton-ci tag` to create one, or check --registry)")
        self.root.mkdir(parents=True, exist_ok=True)
        try:  # exclusive: of two jobs creating the registry at once, one writes the marker, both use it
            atomic_write_json(
                self.root / MARKER,
                {"kind": "lepton-registry", "schema_version": MARKER_SCHEMA, "created": utcnow()},
                exclusive=True,
            )
        except FileExistsError:
            if not self._read_marker():
                raise RegistryError(f"{self.root / MARKER} vanished while the registry was being created") from None

    def _read_marker(self) -> bool:
        """True for a good marker, False for none; a damaged or foreign one is a RegistryError."""
        marker = self.root / MARKER
        try:
            st = os.lstat(marker)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(st.st_mode):
            raise RegistryError(f"{marker} is damaged (not a regular file); is this a lepton-ci registry?")
        try:
            info = loads_strict(read_limited(marker, MARKER_MAX_BYTES, "registry marker"))
        except JsonProblem as exc:
            raise RegistryError(f"{marker} is damaged (not JSON: {exc}); is this a lepton-ci registry?") from None
        except UserError as exc:  # over the size limit
            raise RegistryError(f"{exc.message}; is this a lepton-ci registry?", where=exc.where) from None
        if not isinstance(info, dict) or info.get("kind") != "lepton-registry":
            kind = info.get("kind") if isinstance(info, dict) else None
            raise RegistryError(f"{self.root} is not a lepton-ci registry ({MARKER} has kind {short_repr(kind)})")
        version = info.get("schema_version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version > MARKER_SCHEMA:
            raise RegistryError(
                f"{marker}: registry schema_version {short_repr(version)} is not supported "
                f"(this lepton-ci reads up to {MARKER_SCHEMA})"
            )
        return True

    def _foreign_entries(self) -> list[str]:
        """Entries other than the marker being written: what makes a directory someone else's."""
        return [
            p.name
            for p in self.root.iterdir()
            if p.name != MARKER and not (p.name.startswith(f".{MARKER}.") and p.name.endswith(".tmp"))
        ]

    def _absent(self, what: Path) -> None:
        """Confirm that a missing `what` is a positive "not there": the registry itself must still be
        here. A registry directory that vanished after it was opened is an error, never a first run."""
        if not (self.root / MARKER).is_file():
            raise RegistryError(f"registry {self.root} vanished or lost its {MARKER} while in use (looking for {what})")

    # --- paths ----------------------------------------------------------------------------------------

    def _model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def _manifest(self, name: str, number: int) -> Path:
        return self._model_dir(name) / "versions" / f"{int(number)}.json"

    def _blob(self, digest_hex: str) -> Path:
        if not HEX64_RE.fullmatch(digest_hex):
            raise RegistryError(f"{short_repr(digest_hex)} is not a sha256 hex digest")
        return self.root / "blobs" / "sha256" / digest_hex

    def _history(self, name: str) -> Path:
        return self._model_dir(name) / "history.jsonl"

    # --- listing ----------------------------------------------------------------------------------------

    @_fs
    def models(self) -> list[str]:
        d = self.root / "models"
        if not d.is_dir():
            self._absent(d)
            return []
        return sorted(p.name for p in d.iterdir() if p.is_dir())

    @_fs
    def version_numbers(self, name: str) -> list[int]:
        d = self._model_dir(name) / "versions"
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            self._absent(d)
            return []
        return sorted(int(m.group(1)) for m in map(MANIFEST_RE.fullmatch, names) if m)

    # --- manifests --------------------------------------------------------------------------------------

    @_fs
    def read_manifest(self, name: str, number: int) -> bytes | None:
        try:
            return self._manifest(name, number).read_bytes()
        except FileNotFoundError:
            self._absent(self._manifest(name, number))
            return None

    @_fs
    def create_manifest(self, name: str, number: int, data: bytes) -> bool:
        try:
            atomic_write_bytes(self._manifest(name, number), data, exclusive=True)
        except FileExistsError:  # never overwrite a version
            return False
        return True

    def manifest_location(self, name: str, number: int) -> str:
        return str(self._manifest(name, number))

    def publish_alias(self, name: str, alias: str, number: int) -> None:
        """The history file is where file:// keeps aliases; there is no second place to mirror them to."""

    def history_writes(self, name: str) -> list[tuple[int, str]]:
        """Writes are serialised by flock and the file is replaced atomically: no trail to keep."""
        return []

    # --- blobs ------------------------------------------------------------------------------------------

    @_fs
    def put_blob(self, name: str, src: Path, sha256: str | None = None) -> tuple[str, int]:
        """Copy a file into the blob store, hashing as it goes. The copy always replaces an existing blob
        of the same digest: same bytes when that blob is sound, a repair when it rotted, and a fresh mtime
        either way so `gc` does not take it from under a running tag."""
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
            if sha256 is not None and digest != sha256:
                raise UserError(f"{src} changed while it was being registered (its sha256 is no longer {sha256[:12]})")
            target = self._blob(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
            return digest, size
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @_fs
    def open_blob(self, name: str, digest_hex: str) -> BinaryIO | None:
        try:
            return open(self._blob(digest_hex), "rb")
        except FileNotFoundError:
            self._absent(self._blob(digest_hex))
            return None

    @_fs
    def blobs(self) -> list[Stored]:
        d = self.root / "blobs" / "sha256"
        if not d.is_dir():
            return []
        now = time.time()
        out = []
        for entry in os.scandir(d):
            if HEX64_RE.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                out.append(Stored("blob", entry.name, st.st_size, max(0.0, now - st.st_mtime)))
        return sorted(out, key=lambda s: s.key)

    # --- history ----------------------------------------------------------------------------------------

    @_fs
    def read_history(self, name: str) -> bytes | None:
        try:
            return self._history(name).read_bytes()
        except FileNotFoundError:
            self._absent(self._history(name))
            return None

    @_fs
    def write_history(self, name: str, data: bytes) -> None:
        atomic_write_bytes(self._history(name), data)

    def history_location(self, name: str) -> str:
        return str(self._history(name))

    # --- lock -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        d = self._model_dir(name)
        try:
            d.mkdir(parents=True, exist_ok=True)
            f = open(d / ".lock", "a+")  # noqa: SIM115 - `with f` below; only mkdir/open errors map to _os_error
        except OSError as exc:
            raise _os_error(self.root, exc) from None
        busy = lambda: RegistryError(f"model {name!r} in {self.root} is locked by another process")  # noqa: E731
        with f, exclusive_lock(f, LOCK_TIMEOUT_S, busy):
            yield

    # --- leftovers --------------------------------------------------------------------------------------

    @_fs
    def temp_files(self) -> list[Stored]:
        """Files interrupted writes leave: `blobs/tmp/*` (blob copies) and `.NAME.XXXX.tmp` next to the
        marker, manifests and histories (fsutil's atomic writes). Lock files are not leftovers."""
        now = time.time()
        found: list[Path] = []
        tmp_dir = self.root / "blobs" / "tmp"
        if tmp_dir.is_dir():
            found += [p for p in tmp_dir.iterdir()]
        found += [p for p in self.root.iterdir() if ATOMIC_TEMP_RE.fullmatch(p.name)]
        models = self.root / "models"
        if models.is_dir():
            for dirpath, _dirs, files in os.walk(models):
                found += [Path(dirpath) / f for f in files if ATOMIC_TEMP_RE.fullmatch(f)]
        out = []
        for p in found:
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                out.append(Stored("temp", p.relative_to(self.root).as_posix(), st.st_size, max(0.0, now - st.st_mtime)))
        return sorted(out, key=lambda s: s.key)

    @_fs
    def delete(self, item: Stored) -> None:
        if item.kind == "blob":
            path = self._blob(item.key)
        elif item.kind == "temp":
            parts = item.key.split("/")
            is_temp = (parts[:2] == ["blobs", "tmp"] and len(parts) == 3) or ATOMIC_TEMP_RE.fullmatch(parts[-1])
            if ".." in parts or "" in parts or item.key.startswith("/") or not is_temp:
                raise RegistryError(f"{short_repr(item.key)} is not a temporary file of this registry")
            path = self.root / item.key
        else:
            raise RegistryError(f"cannot delete a {short_repr(item.kind)}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


class LocalRegistry(ModelRegistry):
    """The file:// registry: the shared registry logic bound to `LocalStorage` (the `BACKENDS` entry)."""

    storage_class = LocalStorage
