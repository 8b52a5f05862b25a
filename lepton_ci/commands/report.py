"""`lepton-ci report`."""

from __future__ import annotations

from pathlib import Path

import click

from lepton_ci.commands._common import config_from, path_option


@click.command("report")
@path_option("--run", "run_path", help="run.json (default: train.output).")
@path_option("--gate", "gate_path", help="gate.json (default: gate.output).")
@path_option("--deployment", "deployment_path", help="deployment.json (default: deploy.output).")
@click.option(
    "-o", "--output", metavar="FILE", default="-", show_default=True, help="Write the markdown here ('-' is stdout)."
)
@click.option("--post", is_flag=True, help="Post or update the sticky PR/MR comment on the detected forge.")
@click.option(
    "--summary/--no-summary",
    default=True,
    show_default=True,
    help="Append to the GitHub job summary when there is one.",
)
@click.option(
    "--status/--no-status",
    "commit_status",
    default=True,
    show_default=True,
    help="With --post, set a commit status with the gate verdict.",
)
@click.option(
    "--workflow", metavar="NAME", help="Sticky comment key with the model (default: the CI workflow or job name)."
)
@click.pass_context
def report_cmd(
    ctx: click.Context,
    run_path: Path | None,
    gate_path: Path | None,
    deployment_path: Path | None,
    output: str,
    post: bool,
    summary: bool,
    commit_status: bool,
    workflow: str | None,
) -> None:
    """Render the pull-request report: metric diff, gate verdict, version, deployment.

    With --post, the report becomes one sticky comment per (model, workflow), found on every page of
    comments and updated in place on reruns.
    """
    from lepton_ci.forge.http import mask_secrets
    from lepton_ci.steps.report import report, write_report

    config = config_from(ctx)
    assert config is not None  # required=True: a missing lepton.yml is a UserError
    text = mask_secrets(report(config, run_path=run_path, gate_path=gate_path, deployment_path=deployment_path))
    if output == "-":
        click.echo(text, nl=False)
    else:
        write_report(Path(output), text)
        click.echo(f"report written to {output}", err=True)
    from lepton_ci.forge.detect import detect
    from lepton_ci.forge.outputs import emit

    emit({"report-path": "" if output == "-" else output})

    forge = detect()
    if not post and (not summary or forge.summary_path is None):
        return
    from lepton_ci.forge.publish import gate_annotations, publish
    from lepton_ci.records import GateRecord

    gate_file = gate_path or config.gate_path
    gate = GateRecord.read(gate_file) if gate_file.is_file() else None
    if workflow:
        forge.workflow = workflow
    rule_lines = {
        r["metric"]: int(config.where("gate", "rules", i).rsplit(":", 1)[1])
        for i, r in enumerate(config.section("gate").get("rules") or [])
    }
    config_rel = _relative_to_workspace(config.path)
    # workflow commands on stderr: the runner reads them there, and stdout is the report (`> report.md`)
    result = publish(
        text,
        forge,
        model=config.model_name,
        gate=gate,
        post=post,
        summary=summary,
        status=post and commit_status,
        emit=lambda line: click.echo(line, err=True),
        annotation_lines=gate_annotations(gate, config_rel, rule_lines),
    )
    for notice in result.notices:
        click.echo(f"lepton-ci: notice: {notice}", err=True)
    if result.comment:
        click.echo(
            f"lepton-ci: comment {result.comment['action']}: {result.comment.get('url') or result.comment['id']}",
            err=True,
        )


def _relative_to_workspace(path: Path) -> str:
    import os

    base = Path(os.environ.get("GITHUB_WORKSPACE") or os.environ.get("CI_PROJECT_DIR") or Path.cwd())
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.name
