"""Step outputs for the CI: `$GITHUB_OUTPUT` on GitHub, a dotenv file on GitLab.

Every command calls `emit` with what later jobs may need (version, digest, verdict, endpoint, comment
URL). On GitHub the values land in `$GITHUB_OUTPUT`; on GitLab, when `LEPTON_CI_DOTENV` names a file,
as `LEPTON_<KEY>=value` lines for `artifacts: reports: dotenv`. Elsewhere nothing is written.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_github_outputs(path: Path, outputs: Mapping[str, Any]) -> None:
    """Append outputs; multi-line values use a random heredoc delimiter so a value cannot forge another."""
    with open(path, "a", encoding="utf-8") as f:
        for key, value in outputs.items():
            text = "" if value is None else str(value)
            if "\n" in text:
                delim = f"LEPTON_{secrets.token_hex(8)}"
                f.write(f"{key}<<{delim}\n{text}\n{delim}\n")
            else:
                f.write(f"{key}={text}\n")


def write_dotenv(path: Path, outputs: Mapping[str, Any]) -> None:
    """GitLab dotenv reports take single-line KEY=VALUE; later values for a key replace earlier ones."""
    current: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                current[k] = v
    for key, value in outputs.items():
        name = "LEPTON_" + re.sub(r"[^A-Z0-9]", "_", key.upper())
        current[name] = ("" if value is None else str(value)).replace("\n", " ")
    path.write_text("".join(f"{k}={v}\n" for k, v in current.items()))


def emit(outputs: Mapping[str, Any], env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    if env.get("GITHUB_ACTIONS") == "true" and env.get("GITHUB_OUTPUT"):
        write_github_outputs(Path(env["GITHUB_OUTPUT"]), outputs)
    if env.get("LEPTON_CI_DOTENV"):
        write_dotenv(Path(env["LEPTON_CI_DOTENV"]), outputs)
