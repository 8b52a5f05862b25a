"""`lepton-ci gate`."""

from __future__ import annotations

from pathlib import Path

import click

from lepton_ci.commands._common import config_from, echo_json, path_option, status_line


@click.command("gate")
@path_option("--run", "run_path", help="Candidate run.json (default: train.output or .lepton/run.json).")
@click.option(
    "-b",
    "--baseline",
    metavar="SPEC",
    help="Registry alias, git:REF, a run.json path, or 'none' (default: gate.baseline or production).",
)
@path_option("-o", "--output", help="Where to write gate.json (default: gate.output or .lepton/gate.json).")
@click.option("--json", "as_json", is_flag=True, help="Print the gate record as JSON.")
@click.pass_context
def gate_cmd(
    ctx: click.Context, run_path: Path | None, baseline: str | None, output: Path | None, as_json: bool
) -> None:
    """Check the candidate against the rules in lepton.yml. Exit 0 pass, 1 fail, 2 usage error."""
    from lepton_ci.errors import StepFailed
    from lepton_ci.forge.outputs import emit
    from lepton_ci.steps.gate import gate

    config = config_from(ctx)
    record = gate(config, run_path=run_path, baseline=baseline, output=output)
    compared = record.baseline_outputs()
    emit({"verdict": record.verdict, "gate-json": str(output or config.gate_path), **compared})
    if as_json:
        echo_json(record.to_dict())
    else:
        click.echo(f"baseline: {compared['baseline']}")
        for r in record.results:
            click.echo(status_line(r["passed"], f"{r['metric']} {r['rule']}: {r['reason']}"))
        if not record.results:
            click.echo("no gate rules configured (gate.rules in lepton.yml): passing")
        sig = record.signature.get("alg")
        signed = "signed" if sig == "ecdsa-p256-sha256" else "unsigned"
        click.echo(f"verdict: {record.verdict} ({signed}) -> {output or config.gate_path}")
    if not record.passed:
        failed = [f"{r['metric']} {r['rule']}" for r in record.results if not r["passed"]]
        raise StepFailed(f"gate failed: {', '.join(failed)}")
