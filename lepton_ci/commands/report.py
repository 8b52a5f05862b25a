"""`lepton-ci report`."""

from __future__ import annotations

from pathlib import Path

import click

from lepton_ci.commands._common import config_from, path_option


@click.command("report")
@path_option("--run", "run_path", help="run.json (default: train.output).")
@path_option("--gate", "gate_path", help="gate.json (default: gate.output).")
@path_option("--deployment", "deployment_path", help="deployment.json (default: deploy.output).")
@click.option("-o", "--output", metavar="FILE", default="-", show_default=True, help="Write the markdown here ('-' is stdout).")
@click.pass_context
def report_cmd(ctx: click.Context, run_path, gate_path, deployment_path, output: str) -> None:
    """Render the pull-request report: metric diff, gate verdict, version, deployment."""
    from lepton_ci.fsutil import atomic_write_bytes
    from lepton_ci.steps.report import report

    text = report(config_from(ctx), run_path=run_path, gate_path=gate_path, deployment_path=deployment_path)
    if output == "-":
        click.echo(text, nl=False)
    else:
        atomic_write_bytes(Path(output), text.encode())
        click.echo(f"report written to {output}", err=True)
