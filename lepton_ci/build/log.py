"""Build output for the log, as `--progress` asks: `plain` every line as it comes, `quiet` nothing but the
last lines of a failure, `auto` plain with a CI fold around it (`::group::` on GitHub, a collapsed
section on GitLab) or, on a terminal, rich's dimmed lines."""

from __future__ import annotations

import collections
import os
import sys
import time

PROGRESS_MODES = ("auto", "plain", "quiet")
TAIL_LINES = 20


class BuildLog:
    """Lines of build and push output; keeps the last ones so an error can show them."""

    def __init__(self, progress: str = "auto") -> None:
        self.progress = progress
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._console = None
        if progress == "auto" and sys.stderr.isatty():
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False)

    def line(self, text: str) -> None:
        text = text.rstrip("\n")
        if not text.strip():
            return
        self.tail.append(text)
        if self.progress == "quiet":
            return
        if self._console is not None:
            self._console.print(text, style="dim", markup=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        """A line of lepton-ci's own (what it does next): shown unless quiet."""
        if self.progress != "quiet":
            print(f"lepton-ci: {text}", file=sys.stderr, flush=True)

    def show_tail(self, what: str) -> None:
        """After a failure: the last lines, even in quiet mode (where they were not shown yet)."""
        if self.progress == "quiet" and self.tail:
            print(f"lepton-ci: last lines of {what}:", file=sys.stderr)
            for text in self.tail:
                print(f"  {text}", file=sys.stderr)
        sys.stderr.flush()

    def group(self, title: str) -> _Group:
        return _Group(self, title)


class _Group:
    """A fold in the CI's own syntax around a long phase, with its duration."""

    def __init__(self, log: BuildLog, title: str) -> None:
        self.log, self.title = log, title
        self.key = "lepton_" + "".join(c if c.isalnum() else "_" for c in title.lower())[:40]

    def __enter__(self) -> _Group:
        self.start = time.monotonic()
        if self.log.progress == "quiet":
            return self
        if os.environ.get("GITHUB_ACTIONS") == "true":
            print(f"::group::{self.title}", file=sys.stderr, flush=True)
        elif os.environ.get("GITLAB_CI") == "true":
            print(
                f"\x1b[0Ksection_start:{int(time.time())}:{self.key}[collapsed=true]\r\x1b[0K{self.title}",
                file=sys.stderr,
            )
        else:
            self.log.note(self.title)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.log.progress == "quiet":
            return
        if os.environ.get("GITHUB_ACTIONS") == "true":
            print("::endgroup::", file=sys.stderr, flush=True)
        elif os.environ.get("GITLAB_CI") == "true":
            print(f"\x1b[0Ksection_end:{int(time.time())}:{self.key}\r\x1b[0K", file=sys.stderr, flush=True)
        self.log.note(f"{self.title}: {time.monotonic() - self.start:.1f} s")
