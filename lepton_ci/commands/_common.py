"""Helpers shared by the click commands: config loading, output, exit on a failed verdict."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from lepton_ci.config import Config, find_config, load_config


def config_from(ctx: click.Context, required: bool = True) -> Config | None:
    """The project config; None when not required and there is no lepton.yml here."""
    obj = ctx.find_root().obj or {}
    if "config" not in obj:
        path = find_config(obj.get("config_path"))
        if not required and not path.exists() and not obj.get("config_path"):
            return None
        obj["config"] = load_config(path)
    return obj["config"]


def echo_json(data: Any) -> None:
    """Indented for a terminal; compact otherwise, which lets json use its C encoder (several times
    faster on a diff of thousands of metrics)."""
    indent = 2 if sys.stdout.isatty() else None
    click.echo(json.dumps(data, indent=indent, ensure_ascii=False))


def path_option(*names: str, help: str) -> Any:
    return click.option(*names, type=click.Path(path_type=Path, dir_okay=False), default=None, help=help)


def status_line(ok: bool, text: str) -> str:
    return click.style("✔" if ok else "✘", fg="green" if ok else "red") + " " + text
