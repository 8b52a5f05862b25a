"""Progress bars for registry transfers (rich): bytes, rate and time left, on stderr.

Shown only where someone watches: stderr is a terminal, the transfer is at least `MIN_BYTES`, the command
did not ask for machine output (`--json`: see `set_enabled`), and `LEPTON_CI_PROGRESS` is not `0`. In CI
logs (not a TTY) nothing is drawn, so logs stay one line per event. rich is imported only when a bar is
actually drawn, so `lepton-ci --help` never loads it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

MIN_BYTES = 8 * 1024 * 1024
_disabled = False


def set_enabled(enabled: bool) -> None:
    """The CLI calls this per command: off for `--json` (machine output), on otherwise."""
    global _disabled
    _disabled = not enabled


def wanted(total: int) -> bool:
    if _disabled or total < MIN_BYTES or os.environ.get("LEPTON_CI_PROGRESS", "") == "0":
        return False
    return os.environ.get("LEPTON_CI_PROGRESS", "") == "1" or sys.stderr.isatty()


@contextlib.contextmanager
def transfer(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`; a no-op where no bar is wanted."""
    if not wanted(total):
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    forced = os.environ.get("LEPTON_CI_PROGRESS", "") == "1"  # draw even where stderr is not a terminal
    with Progress(*columns, console=Console(stderr=True, force_terminal=forced or None)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


class CountingReader:
    """A file object that reports every read to `advance` (requests streams an upload by reading it)."""

    def __init__(self, f: BinaryIO, advance: Callable[[int], None]) -> None:
        self.f, self.advance = f, advance

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.advance(len(data))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)


class CountingWriter:
    """A writable file that reports every write to `advance`."""

    def __init__(self, f: BinaryIO, advance: Callable[[int], None]) -> None:
        self.f, self.advance = f, advance

    def write(self, data: bytes) -> int:
        n = self.f.write(data)
        self.advance(len(data))
        return n
