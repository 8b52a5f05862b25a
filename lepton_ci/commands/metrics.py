"""`lepton-ci metrics diff`."""

from __future__ import annotations

from pathlib import Path

import click

from lepton_ci.commands._common import config_from, echo_json


@click.group("metrics")
def metrics_group() -> None:
    """Compare metrics files across git revisions and the workspace."""


@metrics_group.command("diff")
@click.argument("a", required=False, default="HEAD")
@click.argument("b", required=False, default="workspace")
@click.option("-t", "--targets", multiple=True, metavar="PATH", help="Metrics files to compare (default: train.metrics).")
@click.option("--md", "markdown", is_flag=True, help="Print a markdown table.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--precision", type=click.IntRange(0, 12), default=None,
              help="Digits after the point [default: 5 in tables; --json gives full precision unless set].")
@click.option("--all", "show_all", is_flag=True, help="Show unchanged metrics too.")
@click.pass_context
def diff_cmd(ctx: click.Context, a: str, b: str, targets: tuple[str, ...], markdown: bool, as_json: bool,
             precision: int | None, show_all: bool) -> None:
    """Compare metrics between revisions A (default HEAD) and B (default: the workspace).

    A and B are git revisions or the word `workspace`.
    """
    from lepton_ci.errors import UserError
    from lepton_ci.metrics_diff import diff_revisions
    from lepton_ci.metrics import format_markdown, format_table

    if markdown and as_json:
        raise UserError("--md and --json exclude each other; pick one")
    if targets:
        files, base = list(targets), Path.cwd()
    else:
        config = config_from(ctx, required=False)
        if config is None:
            raise UserError("no metrics files: pass --targets PATH or run where lepton.yml lists train.metrics")
        files = list(config.section("train").get("metrics") or [])
        if not files:
            raise UserError("lepton.yml lists no train.metrics; pass --targets PATH", where=config.where("train"))
        base = config.root
    result = diff_revisions(a, b, files, base)
    if as_json:
        echo_json(result.to_json(show_all, precision))
    else:
        render = format_markdown if markdown else format_table
        click.echo(render(result, show_all, 5 if precision is None else precision))
