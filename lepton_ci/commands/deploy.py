"""`lepton-ci deploy`, `deploy status`, `deploy stop`, `deploy rollback`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from lepton_ci.commands._common import config_from, echo_json, status_line

if TYPE_CHECKING:
    from lepton_ci.records import Deployment


def _print(d: Deployment, as_json: bool) -> None:
    if as_json:
        echo_json(d.to_dict())
        return
    click.echo(f"{d.model} v{d.version} on {d.target}: {d.status} at {d.endpoint}")
    for h in d.health:
        ms = f" ({h['ms']} ms)" if h.get("ms") is not None else ""
        click.echo(
            "  "
            + status_line(bool(h.get("passed")), f"{h.get('check')}{ms}{': ' + h['detail'] if h.get('detail') else ''}")
        )


@click.group("deploy", invoke_without_command=True)
@click.option(
    "-v", "--version", "ref", metavar="REF", help="Version, alias or digest (default: the version `tag` just made)."
)
@click.option("--allow-unblessed", is_flag=True, help="Deploy even without a passing, signed gate record (recorded).")
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    metavar="PEM",
    help="Public key file (or PEM text) the blessing must verify with; repeatable (default: "
    "LEPTON_CI_PUBLIC_KEY, then signing.public_key in lepton.yml).",
)
@click.option(
    "--render-only",
    "render_only",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[DIR]",
    help="kubernetes target: write the manifests (to DIR, default deploy.kubernetes.render_only or "
    ".lepton/manifests) for GitOps instead of applying them.",
)
@click.option("--json", "as_json", is_flag=True, help="Print deployment.json.")
@click.pass_context
def deploy_group(
    ctx: click.Context,
    ref: str | None,
    allow_unblessed: bool,
    public_keys: tuple[str, ...],
    render_only: str | None,
    as_json: bool,
) -> None:
    """Deploy a blessed version to deploy.target, then move deploy.alias (production) to it."""
    ctx.obj["as_json"] = as_json
    ctx.obj["public_keys"] = public_keys
    if ctx.invoked_subcommand is not None:
        if ref or allow_unblessed or render_only is not None:
            from lepton_ci.errors import UserError

            flag = "--version" if ref else "--allow-unblessed" if allow_unblessed else "--render-only"
            raise UserError(f"{flag} goes with `lepton-ci deploy` itself, not with `deploy {ctx.invoked_subcommand}`")
        return
    from lepton_ci.steps.deploy import deploy

    config = config_from(ctx)
    if allow_unblessed:
        click.echo("lepton-ci: warning: --allow-unblessed: the gate record is not enforced for this deploy", err=True)
    from lepton_ci.forge.outputs import emit

    record = deploy(config, ref=ref, allow_unblessed=allow_unblessed, public_keys=public_keys, render_only=render_only)
    emit({"endpoint": record.endpoint, "deployed-version": record.version, "deploy-status": record.status})
    _print(record, as_json)


@deploy_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print deployment.json.")
@click.pass_context
def status_cmd(ctx: click.Context, as_json: bool) -> None:
    """Check the recorded deployment; exit 1 unless it is healthy."""
    from lepton_ci.errors import StepFailed
    from lepton_ci.steps.deploy import status

    d = status(config_from(ctx))
    _print(d, as_json or ctx.obj["as_json"])
    if d.status != "healthy":
        raise StepFailed(f"deployment is {d.status}")


@deploy_group.command("stop")
@click.option("--json", "as_json", is_flag=True, help="Print deployment.json.")
@click.pass_context
def stop_cmd(ctx: click.Context, as_json: bool) -> None:
    """Stop the recorded deployment."""
    from lepton_ci.steps.deploy import stop

    _print(stop(config_from(ctx)), as_json or ctx.obj["as_json"])


@deploy_group.command("rollback")
@click.option(
    "--allow-unblessed", is_flag=True, help="Allow going back to a version without a passing, signed gate record."
)
@click.option("--json", "as_json", is_flag=True, help="Print deployment.json.")
@click.pass_context
def rollback_cmd(ctx: click.Context, allow_unblessed: bool, as_json: bool) -> None:
    """Deploy the previous version again and move the alias back to it."""
    from lepton_ci.steps.deploy import rollback

    _print(
        rollback(config_from(ctx), allow_unblessed=allow_unblessed, public_keys=ctx.obj["public_keys"]),
        as_json or ctx.obj["as_json"],
    )
