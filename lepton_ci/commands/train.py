"""`lepton-ci train`."""

from __future__ import annotations

from pathlib import Path

import click

from lepton_ci.commands._common import config_from, path_option


@click.command("train")
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a train.params value (repeatable); values are read as YAML scalars.",
)
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), help="Stop the command after this many seconds."
)
@path_option("-o", "--output", help="Where to write run.json (default: train.output or .lepton/run.json).")
@click.option("-q", "--quiet", is_flag=True, help="Do not echo the command's output (it still goes to train.log).")
@click.pass_context
def train_cmd(
    ctx: click.Context, params: tuple[str, ...], timeout: float | None, output: Path | None, quiet: bool
) -> None:
    """Run the configured training command and record params, metrics, artifacts and environment."""
    from lepton_ci.forge.outputs import emit
    from lepton_ci.steps.train import parse_param_overrides, train

    config = config_from(ctx)
    record = train(
        config, param_overrides=parse_param_overrides(list(params)), timeout=timeout, output=output, quiet=quiet
    )
    emit(
        {
            "run-id": record.run_id,
            "run-json": str(output or config.run_path),
            "artifacts-digest": record.artifacts_digest,
        }
    )
    click.echo(
        f"lepton-ci: run {record.run_id} succeeded in {record.timing['duration_s']:.1f}s: "
        f"{len(record.metrics)} metric(s), {len(record.artifacts)} artifact(s) -> {output or config.run_path}",
        err=True,
    )
