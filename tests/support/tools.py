"""Locating the command-line tools the tests drive (act, actionlint, zizmor, shellcheck, ...)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def github_actions_tool(name: str) -> str:
    """A test tool from the project venv or PATH: a missing one skips, but fails under scripts/test and CI."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found:
        return found
    msg = f"{name} is missing: scripts/test installs it (scripts/deps/20-github-actions.sh)"
    if os.environ.get("CI") == "true" or os.environ.get("LEPTON_GITHUB_ACTIONS_TOOLS"):
        pytest.fail(msg)
    pytest.skip(msg)
