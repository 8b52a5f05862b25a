"""`lepton-ci metrics diff`."""

from __future__ import annotations

from pathlib import Path

import click

from lepton_ci.commands._common import config_or_none, echo_json


@click.group("metrics")
def metrics_group() -> None:
    """Compare metrics files across git revisions and the workspace."""


@metrics_group.command("diff")
@click.argument("a", required=False, default="HEAD")
@click.argument("b", required=False, default="workspace")
@click.option(
    "-t",
    "--targets",
    multiple=True,
    metavar="PATH",
    help="Metrics files to compare (default: train.metrics of lepton.yml, else the metrics of dvc.yaml, "
    "at each revision).",
)
@click.option("--md", "markdown", is_flag=True, help="Print a markdown table.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--precision",
    type=click.IntRange(0, 12),
    default=None,
    help="Digits after the point [default: 5 in tables; --json gives full precision unless set].",
)
@click.option("--all", "show_all", is_flag=True, help="Show unchanged metrics too.")
@click.pass_context
def diff_cmd(
    ctx: click.Context,
    a: str,
    b: str,
    targets: tuple[str, ...],
    markdown: bool,
    as_json: bool,
    precision: int | None,
    show_all: bool,
) -> None:
    """Compare metrics between revisions A (default HEAD) and B (default: the workspace).

    A and B are git revisions or the word `workspace`.
    """
    from lepton_ci.errors import UserError
    from lepton_ci.metrics import format_markdown, format_table
    from lepton_ci.metrics_diff import diff_revisions

    if markdown and as_json:
        raise UserError("--md and --json exclude each other; pick one")
    from lepton_ci.config import DEFAULT_NAME

    files: list[str] | None
    if targets:
        files, base, config_name = list(targets), Path.cwd(), DEFAULT_NAME
    else:
        # Each side reads its own list (lepton.yml, else dvc.yaml, at that revision); the workspace
        # config is still loaded (and validated) here so a broken lepton.yml is an error, not a note.
        files = None
        config = config_or_none(ctx)
        if config is not None:
            if not config.section("train").get("metrics"):
                raise UserError("lepton.yml lists no train.metrics; pass --targets PATH", where=config.where("train"))
            base, config_name = config.root, config.path.name
        else:
            base, config_name = Path.cwd(), DEFAULT_NAME
            if not (base / "dvc.yaml").is_file():
                raise UserError(
                    "no metrics files: pass --targets PATH, or run where lepton.yml lists "
                    "train.metrics or dvc.yaml lists metrics"
                )
    result = diff_revisions(a, b, files, base, config_name=config_name)
    if as_json:
        echo_json(result.to_json(show_all, precision))
    else:
        render = format_markdown if markdown else format_table
        click.echo(render(result, show_all, 5 if precision is None else precision))
