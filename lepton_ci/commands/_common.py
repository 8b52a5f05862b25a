"""Helpers shared by the click commands: config loading, output, exit on a failed verdict."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from lepton_ci.config import Config, find_config, load_config


def config_from(ctx: click.Context) -> Config:
    """The project config, loaded once per invocation; a missing or invalid lepton.yml is an error."""
    obj = _root_obj(ctx)
    if "config" not in obj:
        obj["config"] = load_config(find_config(obj.get("config_path")))
    config: Config = obj["config"]
    return config


def config_or_none(ctx: click.Context) -> Config | None:
    """The project config, or None when there is no lepton.yml here and no --config was given."""
    obj = _root_obj(ctx)
    if "config" not in obj and not obj.get("config_path") and not find_config(obj.get("config_path")).exists():
        return None
    return config_from(ctx)


def _root_obj(ctx: click.Context) -> dict[str, Any]:
    obj: dict[str, Any] = ctx.find_root().obj or {}
    return obj


def echo_json(data: Any) -> None:
    """Indented for a terminal; compact otherwise, which lets json use its C encoder (several times
    faster on a diff of thousands of metrics)."""
    indent = 2 if sys.stdout.isatty() else None
    click.echo(json.dumps(data, indent=indent, ensure_ascii=False))


def path_option(*names: str, help: str) -> Any:
    return click.option(*names, type=click.Path(path_type=Path, dir_okay=False), default=None, help=help)


def status_line(ok: bool, text: str) -> str:
    return click.style("✔" if ok else "✘", fg="green" if ok else "red") + " " + text
