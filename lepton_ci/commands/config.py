"""`lepton-ci config validate|schema`."""

from __future__ import annotations

import click

from lepton_ci.commands._common import config_from


@click.group("config")
def config_group() -> None:
    """Validate lepton.yml, or print its JSON Schema for editors."""


@config_group.command("validate")
@click.pass_context
def validate_cmd(ctx: click.Context) -> None:
    """Check lepton.yml against the schema; exit 2 with file:line on the first problem."""
    config = config_from(ctx)
    click.echo(f"{config.path}: OK (model {config.model_name}, steps: {', '.join(config.steps)})")


@config_group.command("schema")
def schema_cmd() -> None:
    """Print the JSON Schema of lepton.yml (for yaml-language-server and other editors)."""
    from lepton_ci.config import SCHEMA_PATH

    click.echo(SCHEMA_PATH.read_text(), nl=False)
