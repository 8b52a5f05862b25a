"""Encryption at rest for registry blobs: AES-256-GCM in fixed-size segments, keyed by a CI secret.

With `LEPTON_CI_REGISTRY_KEY` set (32 random bytes, base64 or hex: `lepton-ci keys registry-key` prints
one), `tag` stores every artifact file encrypted, on file:// and oci:// alike. The version manifest keeps
the plaintext digest and size of each file (what the gate signed and deploy verifies) and names the stored
bytes separately (`stored: {sha256, size, cipher, key_id}`), so blob digests are the digests of what the
registry holds. Readers decrypt while they verify; a missing or wrong key is a one-line error naming the key
id the version was encrypted with, and a changed byte fails the segment's tag: never garbage.

Format (`aes-256-gcm-stream-v1`): an 15-byte header (`LCI-AEAD` + a 7-byte nonce prefix), then segments of
up to 1 MiB of plaintext, each sealed with the nonce prefix + a 4-byte segment counter + a 1-byte "last"
flag, and the header as associated data (the STREAM construction: segments cannot be reordered, dropped or
the stream cut short without failing). The nonce prefix is derived from the key and the plaintext digest, so
the same file encrypts to the same bytes (blobs stay deduplicated) and different files never share a nonce.

What stays visible to whoever can read the registry: file paths and plaintext sizes and digests (in the
version manifest), tags and aliases, metadata (run and gate records, metrics), and blob sizes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from lepton_ci.errors import ConfigError, RegistryError, UserError

KEY_ENV = "LEPTON_CI_REGISTRY_KEY"
CIPHER = "aes-256-gcm-stream-v1"
MAGIC = b"LCI-AEAD"
SEGMENT = 1024 * 1024
TAG = 16
HEADER = len(MAGIC) + 7


@dataclass(frozen=True)
class RegistryKey:
    key: bytes = field(repr=False)

    @property
    def key_id(self) -> str:
        """Names the key (not secret): which key a version was encrypted with, for the error message."""
        return hashlib.sha256(b"lepton-ci registry key id\0" + self.key).hexdigest()[:16]

    def _aead(self) -> Any:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return AESGCM(self.key)

    def encrypt_file(self, src: Path, dest_dir: Path) -> tuple[Path, str, int, str]:
        """Encrypt `src` into a temporary file under dest_dir; returns (path, plaintext sha256 hex, size,
        ciphertext sha256 hex).
        The plaintext is hashed first (the nonce depends on it) and again while encrypting: a file that
        changes in between is refused."""
        h = hashlib.sha256()
        with open(src, "rb") as f:
            while chunk := f.read(SEGMENT):
                h.update(chunk)
        plain = h.hexdigest()
        prefix = hmac.new(self.key, b"lepton-ci nonce\0" + bytes.fromhex(plain), hashlib.sha256).digest()[:7]
        header = MAGIC + prefix
        aead = self._aead()
        fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".enc-")
        again, size, sealed = hashlib.sha256(), 0, hashlib.sha256(header)
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
                out.write(header)
                chunk, counter = f.read(SEGMENT), 0
                while True:
                    nxt = f.read(SEGMENT) if len(chunk) == SEGMENT else b""
                    last = not nxt
                    again.update(chunk)
                    size += len(chunk)
                    nonce = prefix + counter.to_bytes(4, "big") + (b"\x01" if last else b"\x00")
                    block = aead.encrypt(nonce, chunk, header)
                    sealed.update(block)
                    out.write(block)
                    if last:
                        break
                    chunk, counter = nxt, counter + 1
            if again.hexdigest() != plain:
                raise UserError(f"{src} changed while it was being encrypted; tag again")
            return Path(tmp), plain, size, sealed.hexdigest()
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def reader(self, stream: BinaryIO, what: str) -> BinaryIO:
        return io.BufferedReader(_Decrypting(self, stream, what), SEGMENT)


class _Decrypting(io.RawIOBase):
    """Plaintext of an encrypted blob, one verified segment at a time (one segment of look-ahead tells which
    segment is the last, so a stream cut at a segment boundary fails too)."""

    def __init__(self, key: RegistryKey, stream: BinaryIO, what: str) -> None:
        self.key, self.stream, self.what = key, stream, what
        self.aead = key._aead()
        self.header = self._read_exact(HEADER)
        if len(self.header) != HEADER or not self.header.startswith(MAGIC):
            raise RegistryError(f"{what} is not an encrypted lepton-ci blob (bad header)")
        self.counter = 0
        self.pending = self._read_exact(SEGMENT + TAG)
        self.buffer = b""
        self.done = False

    def _read_exact(self, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            chunk = self.stream.read(n - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def readable(self) -> bool:
        return True

    def _next_segment(self) -> None:
        from cryptography.exceptions import InvalidTag

        sealed = self.pending
        self.pending = self._read_exact(SEGMENT + TAG) if len(sealed) == SEGMENT + TAG else b""
        last = not self.pending
        nonce = self.header[len(MAGIC) :] + self.counter.to_bytes(4, "big") + (b"\x01" if last else b"\x00")
        try:
            self.buffer = self.aead.decrypt(nonce, sealed, self.header)
        except InvalidTag:
            raise RegistryError(
                f"cannot decrypt {self.what}: its bytes were changed, cut short or reordered, or {KEY_ENV} is "
                f"not the key they were encrypted with (it is key {self.key.key_id})"
            ) from None
        self.counter += 1
        self.done = last

    def readinto(self, b: Any) -> int:
        while not self.buffer:
            if self.done:
                return 0
            self._next_segment()
        n = min(len(b), len(self.buffer))
        b[:n] = self.buffer[:n]
        self.buffer = self.buffer[n:]
        return n

    def close(self) -> None:
        try:
            self.stream.close()
        finally:
            super().close()


def parse_key(text: str, source: str = KEY_ENV) -> RegistryKey:
    raw = text.strip()
    key: bytes | None = None
    if len(raw) == 64:
        try:
            key = bytes.fromhex(raw)
        except ValueError:
            key = None
    if key is None:
        try:
            key = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            key = None
    if key is None or len(key) != 32:
        raise ConfigError(f"{source} is not a registry key: expected 32 bytes as base64 (44 characters) or hex (64)")
    return RegistryKey(key)


def load_key(env: dict[str, str] | None = None) -> RegistryKey | None:
    value = (os.environ if env is None else env).get(KEY_ENV, "")
    return parse_key(value) if value.strip() else None


def new_key_text() -> str:
    return base64.b64encode(os.urandom(32)).decode("ascii")


def stored_problem(stored: Any, i: int) -> str | None:
    """Why an artifact's `stored` entry is malformed, or None."""
    if not isinstance(stored, dict):
        return f"artifacts[{i}].stored is not an object"
    sha = stored.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        return f"artifacts[{i}].stored.sha256 is not a sha256 hex digest"
    size = stored.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < HEADER + TAG:
        return f"artifacts[{i}].stored.size is not the size of an encrypted blob"
    if stored.get("cipher") != CIPHER:
        return f"artifacts[{i}].stored.cipher {stored.get('cipher')!r} is not {CIPHER}"
    if not isinstance(stored.get("key_id"), str) or len(stored["key_id"]) != 16:
        return f"artifacts[{i}].stored.key_id is not a key id"
    return None


def key_for(stored: dict[str, Any], what: str) -> RegistryKey:
    """The key that opens a stored blob, or a one-line error saying which key it needs."""
    key = load_key()
    if key is None:
        raise RegistryError(f"{what} is encrypted (key {stored['key_id']}): set {KEY_ENV} to read it")
    if key.key_id != stored["key_id"]:
        raise RegistryError(
            f"{what} is encrypted with key {stored['key_id']}, but {KEY_ENV} is key {key.key_id}: wrong key"
        )
    return key
