"""`lepton-ci run`."""

from __future__ import annotations

import click

from lepton_ci.commands._common import config_from


@click.command("run")
@click.option(
    "-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="Override a train.params value (repeatable)."
)
@click.option(
    "-s",
    "--steps",
    metavar="LIST",
    help="Comma-separated steps to run (default: steps in lepton.yml, else all; build only with build.image).",
)
@click.option("--allow-unblessed", is_flag=True, help="Let deploy proceed without a signed passing gate record.")
@click.pass_context
def run_cmd(ctx: click.Context, params: tuple[str, ...], steps: str | None, allow_unblessed: bool) -> None:
    """Run train, gate, tag, build, deploy and report as configured, and print the report."""
    from lepton_ci.errors import StepFailed
    from lepton_ci.pipeline import run_pipeline
    from lepton_ci.steps.train import parse_param_overrides

    config = config_from(ctx)
    wanted = [s.strip() for s in steps.split(",") if s.strip()] if steps else None
    result = run_pipeline(
        config,
        steps=wanted,
        param_overrides=parse_param_overrides(list(params)),
        allow_unblessed=allow_unblessed,
        log=lambda s: click.echo(s, err=True),
    )
    from lepton_ci.forge.outputs import emit

    emit(
        {
            **result.outputs,
            "steps": ",".join(f"{k}:{v}" for k, v in result.steps.items()),
            "report-path": str(config.report_path),
        }
    )
    if result.report:
        click.echo(result.report, nl=False)
    if result.failure:
        raise StepFailed(result.failure)
