"""`lepton-ci tag`."""

from __future__ import annotations

from pathlib import Path

import click

from lepton_ci.commands._common import config_from, echo_json, path_option


@click.command("tag")
@path_option("--run", "run_path", help="run.json of the run to register.")
@path_option("--gate", "gate_path", help="gate.json that blessed it.")
@click.option(
    "-a",
    "--alias",
    "aliases",
    multiple=True,
    metavar="NAME",
    help="Alias to point at the new version (default: tag.aliases or candidate).",
)
@click.option("--reason", default="", help="Recorded in the alias history.")
@click.option(
    "--from",
    "source",
    metavar="oci://HOST/REPO[:TAG|@DIGEST]",
    help="Register the files of an OCI artifact pushed by another tool (oras, ModelKit) instead of a run's.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the version record as JSON.")
@click.pass_context
def tag_cmd(
    ctx: click.Context,
    run_path: Path | None,
    gate_path: Path | None,
    aliases: tuple[str, ...],
    reason: str,
    source: str | None,
    as_json: bool,
) -> None:
    """Register the run's artifacts as the next immutable version of the model."""
    from lepton_ci.errors import UserError
    from lepton_ci.forge.outputs import emit
    from lepton_ci.steps.tag import tag, tag_from

    config = config_from(ctx)
    wanted = list(aliases) if aliases else None
    if source is not None:
        if run_path is not None:
            raise UserError("--from and --run name two sources of files: give one")
        result = tag_from(config, source, gate_path=gate_path, aliases=wanted, reason=reason)
    else:
        result = tag(config, run_path=run_path, gate_path=gate_path, aliases=wanted, reason=reason)
    mv = result.version
    emit({"version": mv.version, "digest": mv.digest, "model": mv.name})
    if as_json:
        echo_json(mv.to_dict())
        return
    what = "registered" if result.created else "already registered"
    moved = ", ".join(f"{e.alias} -> v{e.to}" for e in result.aliases)
    click.echo(f"{mv.name} v{mv.version} {what} ({mv.digest}){'; ' + moved if moved else ''}")
