"""One image layer holding the model files, made byte-for-byte reproducibly.

The same files always give the same layer digest: entries sorted by path, fixed modification time,
numeric owner (the image's non-root user), fixed modes, no user or group names, and a gzip stream with no
name and no time in its header. So a rebuild of the same version pushes nothing new, and anyone can
recompute the digest from the model files.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

GZIP_LAYER_OCI = "application/vnd.oci.image.layer.v1.tar+gzip"
GZIP_LAYER_DOCKER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


@dataclass(frozen=True)
class Layer:
    path: Path
    digest: str  # sha256 of the gzip bytes (the blob)
    size: int
    diff_id: str  # sha256 of the uncompressed tar (the image config's rootfs.diff_ids)


class _Hashing(io.RawIOBase):
    """A write-through file that hashes and counts what passes."""

    def __init__(self, out: BinaryIO | gzip.GzipFile) -> None:
        self.out, self.hash, self.size = out, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.hash.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)


def _dirs(rel_paths: list[str]) -> list[str]:
    found = set()
    for rel in rel_paths:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            found.add("/".join(parts[:i]))
    return sorted(found)


def model_layer(files: dict[str, Path], dest: Path, target_dir: str, uid: int) -> Layer:
    """A gzip tar layer with `files` (relative path -> source) under `target_dir` (absolute, in the image)."""
    root = target_dir.strip("/")
    with open(dest, "wb") as raw:
        compressed = _Hashing(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=6) as gz:
            plain = _Hashing(gz)
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for name in [root] + [f"{root}/{d}" for d in _dirs(list(files))]:
                    tar.addfile(_info(name + "/", tarfile.DIRTYPE, 0o755, uid))
                for rel in sorted(files):
                    src = files[rel]
                    info = _info(f"{root}/{rel}", tarfile.REGTYPE, 0o644, uid)
                    info.size = src.stat().st_size
                    with open(src, "rb") as f:
                        tar.addfile(info, f)
    return Layer(dest, "sha256:" + compressed.hash.hexdigest(), compressed.size, "sha256:" + plain.hash.hexdigest())


def _info(name: str, kind: bytes, mode: int, uid: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid = info.gid = uid
    info.uname = info.gname = ""
    info.mtime = 0
    return info
