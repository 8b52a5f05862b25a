"""File helpers shared by records and registries: atomic writes, hashing, canonical JSON, the one strict
JSON reader, and bounded echoes of user values for error messages.

Atomic writes (temp file in the same directory, fsync, rename) are what make "partial writes never
corrupt a registry or a deployment" true: a reader sees the old file or the new one, never half.

Every record and registry file is parsed by `loads_strict` (through `parse_json_strict` or directly):
strict UTF-8, no NaN/Infinity and no number that overflows to an infinity (`1e999`), no string holding a
lone surrogate (`"\\ud800"` is valid JSON syntax but not Unicode, and could not be written back), and
nesting too deep for the parser is a message rather than a RecursionError. What it returns can always
be written again by `canonical_json` and `atomic_write_json`; those still turn the same problems into a
one-line `UserError` as a last line of defence.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import reprlib
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from lepton_ci.errors import UserError

CHUNK = 1 << 20


# --- bounded echoes -----------------------------------------------------------------------------------

_REPR = reprlib.Repr()
_REPR.maxlevel = 2
_REPR.maxstring = 40
_REPR.maxother = 40
_REPR.maxlong = 40
for _attr in ("maxlist", "maxtuple", "maxdict", "maxset", "maxfrozenset", "maxdeque", "maxarray"):
    setattr(_REPR, _attr, 4)


def short_repr(value: Any, limit: int = 80) -> str:
    """`repr(value)` bounded to about `limit` characters, for echoing a user's value in a one-line error.

    A long string keeps its first `limit` characters and says how long it was (`'xxx…' (10000 chars)`);
    a container is shown a few levels and items deep; an enormous integer by its size. The result is one
    line (repr escapes newlines) and never much longer than `limit`, whatever the input."""
    if isinstance(value, str):
        text = repr(value[:limit])
        if len(value) <= limit and len(text) <= limit + 2:
            return text
        return f"{text[: limit + 1]}…{text[0]} ({len(value)} chars)"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    try:
        text = _REPR.repr(value)
    except (ValueError, RecursionError):  # e.g. an int past sys.get_int_max_str_digits() deep inside
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "…"


# --- strict JSON in, always-encodable JSON out ----------------------------------------------------------


class JsonProblem(ValueError):
    """Why bytes are not a JSON document lepton-ci accepts (one short phrase, no file name)."""


class JsonEncodeError(UserError, ValueError):
    """A value that cannot be written as JSON (a lone surrogate, a non-finite number, nesting too deep).

    A one-line UserError (exit 2) rather than a traceback; also a ValueError, so callers that already
    turn json's ValueErrors into their own message keep doing so."""


# A lone surrogate can only come from a `\uD800`-`\uDFFF` escape once the bytes are decoded strictly, so
# the value is walked only when the text holds such an escape (valid escaped pairs are walked too, and pass).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _refuse_constant(name: str) -> Any:
    raise JsonProblem(f"{name} is not a JSON number (records hold finite numbers only)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonProblem(f"number {text[:40]} is out of range (records hold finite numbers only)")
    return value


def has_lone_surrogate(value: Any) -> bool:
    """True when any string in `value` (keys included, at any depth) is not encodable as UTF-8."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def loads_strict(raw: bytes | str) -> Any:
    """Parse one JSON document the way every record and registry file is read; raise `JsonProblem`.

    Bytes are decoded as strict UTF-8 (a leading BOM is allowed); `json.loads(bytes)` would decode with
    `surrogatepass` and let encoded surrogates through. Refused: NaN/Infinity, numbers that overflow to
    an infinity, strings holding a lone surrogate, and nesting deeper than the parser can go."""
    if isinstance(raw, (bytes, bytearray)):
        try:
            text = bytes(raw).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise JsonProblem(f"not UTF-8 (byte {exc.object[exc.start]:#04x} at offset {exc.start})") from None
        surrogates_possible = _SURROGATE_ESCAPE.search(text) is not None
    else:
        text = raw
        surrogates_possible = not text.isascii() or _SURROGATE_ESCAPE.search(text) is not None
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except JsonProblem:
        raise
    except RecursionError:
        raise JsonProblem("nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError; an integer past the interpreter's digit limit
        raise JsonProblem(str(exc).splitlines()[0][:200]) from None
    if surrogates_possible and has_lone_surrogate(value):
        raise JsonProblem("a string holds a lone surrogate (a \\ud800-\\udfff escape), which is not Unicode text")
    return value


def parse_json_strict(raw: bytes | str, what: str, where: str, error: type[UserError] = UserError) -> Any:
    """`loads_strict`, with any problem as one line naming the file: `WHERE: WHAT is not valid JSON: WHY`."""
    try:
        return loads_strict(raw)
    except JsonProblem as exc:
        raise error(f"{what} is not valid JSON: {exc}", where=where) from None


def _dumps(obj: Any, where: str | None, **options: Any) -> bytes:
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False, **options).encode("utf-8")
    except UnicodeEncodeError:
        raise JsonEncodeError(
            "cannot write JSON: a string holds a lone surrogate (not Unicode text)", where=where
        ) from None
    except RecursionError:
        raise JsonEncodeError("cannot write JSON: nested too deeply", where=where) from None
    except ValueError as exc:  # "Out of range float values are not JSON compliant"
        raise JsonEncodeError(f"cannot write JSON: {str(exc)[:200]}", where=where) from None


def canonical_json(obj: Any) -> bytes:
    """The one byte form used for digests and signatures: sorted keys, no spaces, UTF-8.

    A value JSON cannot carry raises `JsonEncodeError` (a UserError and a ValueError)."""
    return _dumps(obj, None, sort_keys=True, separators=(",", ":"))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, exclusive: bool = False) -> None:
    """Write `data` to `path` so readers never see a partial file.

    With `exclusive`, fail with FileExistsError instead of replacing an existing file (the link(2)
    step is atomic), which is how immutable registry objects are created.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, target)
            os.unlink(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, exclusive: bool = False) -> None:
    """Write `obj` as indented UTF-8 JSON; a value JSON cannot carry is a `JsonEncodeError` naming `path`
    (and nothing is written)."""
    data = _dumps(obj, str(path), indent=2, sort_keys=False) + b"\n"
    atomic_write_bytes(path, data, exclusive=exclusive)


@contextlib.contextmanager
def exclusive_lock(f: IO[Any], timeout_s: float, busy: Callable[[], Exception], poll_s: float = 0.05) -> Iterator[None]:
    """Hold an exclusive flock on the open file `f`, waiting at most `timeout_s`; `busy()` is the error raised
    when another process keeps it. The kernel drops the lock if the holder dies, so a killed writer never
    leaves a stale lock behind."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise busy() from None
            time.sleep(poll_s)
    try:
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
