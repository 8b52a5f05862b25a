"""`lepton-ci registry list|show|history|promote|rollback|check|gc|copy`."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import click

from lepton_ci.commands._common import config_or_none, echo_json

if TYPE_CHECKING:
    from lepton_ci.registry.base import Registry, Verifier


def _registry(ctx: click.Context) -> Registry:
    from lepton_ci.config import DEFAULT_REGISTRY
    from lepton_ci.registry import open_registry

    url = ctx.obj.get("registry_url")
    config = config_or_none(ctx)
    base = config.root if config else Path.cwd()
    url = url or (config.registry_url if config else os.environ.get("LEPTON_CI_REGISTRY") or DEFAULT_REGISTRY)
    return open_registry(url, base)


def _model(ctx: click.Context) -> str:
    from lepton_ci.errors import UserError

    name = ctx.obj.get("model")
    if name:
        return name
    config = config_or_none(ctx)
    if config is None:
        raise UserError("no model given: pass --model NAME or run where lepton.yml names the model")
    return config.model_name


@click.group("registry")
@click.option(
    "-r",
    "--registry",
    "registry_url",
    metavar="URL",
    help="Registry URL (default: from lepton.yml, else file://.lepton/registry).",
)
@click.option("-m", "--model", metavar="NAME", help="Model name (default: model.name in lepton.yml).")
@click.pass_context
def registry_group(ctx: click.Context, registry_url: str | None, model: str | None) -> None:
    """Inspect the model registry and move aliases."""
    ctx.obj["registry_url"] = registry_url
    ctx.obj["model"] = model


@registry_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    """List the versions of every model, or of --model only."""
    reg = _registry(ctx)
    name = ctx.obj.get("model")
    names = [name] if name else reg.models()
    rows = []
    for n in names:
        aliases = reg.aliases(n)
        for mv in reg.versions(n):
            rows.append(
                {
                    "model": n,
                    "version": mv.version,
                    "digest": mv.digest,
                    "created": mv.created,
                    "aliases": sorted(a for a, v in aliases.items() if v == mv.version),
                    "gate": (mv.gate or {}).get("verdict", "none"),
                    "metrics": mv.metrics,
                }
            )
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no versions" + (f" of {name}" if name else ""))
    for r in rows:
        al = f"  [{', '.join(r['aliases'])}]" if r["aliases"] else ""
        click.echo(f"{r['model']}  v{r['version']}  {r['digest'][:19]}  {r['created']}  gate:{r['gate']}{al}")


@registry_group.command("show")
@click.argument("ref", default="latest")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def show_cmd(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show one version: a number (3 or v3), an alias, a digest, or 'latest'."""
    reg = _registry(ctx)
    mv = reg.get(_model(ctx), ref)
    if as_json:
        echo_json(mv.to_dict())
        return
    aliases = sorted(a for a, v in reg.aliases(mv.name).items() if v == mv.version)
    click.echo(f"{mv.name} v{mv.version}\n  digest:    {mv.digest}\n  created:   {mv.created}")
    click.echo(f"  aliases:   {', '.join(aliases) or '-'}\n  gate:      {(mv.gate or {}).get('verdict', 'none')}")
    click.echo(f"  run:       {(mv.run or {}).get('run_id', '-')}")
    for art in mv.artifacts:
        click.echo(f"  artifact:  {art['path']}  {art['size']} bytes  sha256:{art['sha256'][:12]}")
    for k, v in sorted(mv.metrics.items()):
        click.echo(f"  metric:    {k} = {v}")


@registry_group.command("history")
@click.option("-a", "--alias", metavar="NAME", help="Only this alias.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def history_cmd(ctx: click.Context, alias: str | None, as_json: bool) -> None:
    """The append-only history of alias moves."""
    events = _registry(ctx).history(_model(ctx), alias)
    if as_json:
        echo_json([e.to_dict() for e in events])
        return
    if not events:
        click.echo("no alias moves yet")
    for e in events:
        frm = f"v{e.from_}" if e.from_ is not None else "-"
        click.echo(f"#{e.seq}  {e.at}  {e.alias}: {frm} -> v{e.to}  {e.action}  by {e.actor}  {e.reason}")


@registry_group.command("promote")
@click.argument("ref")
@click.argument("alias")
@click.option("--reason", default="", help="Recorded in the alias history.")
@click.pass_context
def promote_cmd(ctx: click.Context, ref: str, alias: str, reason: str) -> None:
    """Point ALIAS at version REF."""
    reg = _registry(ctx)
    name = _model(ctx)
    mv = reg.get(name, ref)
    e = reg.move_alias(name, alias, mv.version, reason=reason or "promote")
    click.echo(f"{name}: {alias} -> v{e.to}" + (f" (was v{e.from_})" if e.from_ is not None else ""))


@registry_group.command("rollback")
@click.argument("alias")
@click.option("--reason", default="", help="Recorded in the alias history.")
@click.pass_context
def rollback_cmd(ctx: click.Context, alias: str, reason: str) -> None:
    """Move ALIAS back to the target it had before its last move."""
    name = _model(ctx)
    e = _registry(ctx).rollback(name, alias, reason=reason)
    click.echo(f"{name}: {alias} rolled back v{e.from_} -> v{e.to}")


def _signature_verifier(ctx: click.Context, public_keys: tuple[str, ...]) -> Verifier | None:
    """A check hook that verifies each version's gate signature with the trusted public keys, or None
    when no key is configured (then only digests are checked, and the output says so)."""
    from lepton_ci import signing
    from lepton_ci.records import GateRecord, ModelVersion, artifacts_digest

    config = config_or_none(ctx)
    if config is not None:
        from lepton_ci.steps.deploy import trusted_keys

        keys = trusted_keys(config, public_keys)
    else:
        keys = signing.trusted_keys(explicit=public_keys)
    if not keys:
        return None

    def verify(mv: ModelVersion) -> str | None:
        if not mv.gate or (mv.gate.get("signature") or {}).get("alg") in (None, "none"):
            return None  # unblessed, not tampered: deploy refuses it anyway
        try:
            gate = GateRecord.from_dict(mv.gate, source="gate record")
        except Exception as exc:  # noqa: BLE001 - a record that cannot be read is a finding, not a crash
            return f"gate record is malformed: {exc}"
        ok, reason = signing.verify(gate, keys)
        if not ok:
            return f"gate signature: {reason}"
        if gate.candidate.get("digest") != artifacts_digest(mv.artifacts):
            return "the signed gate record blesses other artifacts"
        return None

    return verify


@registry_group.command("check")
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    metavar="PEM",
    help="Also verify each version's gate signature with this public key (file or PEM); repeatable. "
    "Default: LEPTON_CI_PUBLIC_KEY, then signing.public_key in lepton.yml.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def check_cmd(ctx: click.Context, public_keys: tuple[str, ...], as_json: bool) -> None:
    """Verify every digest, blob, gate signature and the alias history chain. Exit 1 on any error."""
    from lepton_ci.errors import StepFailed

    reg = _registry(ctx)
    verifier = _signature_verifier(ctx, public_keys)
    only = [ctx.obj["model"]] if ctx.obj.get("model") else None  # -m NAME: that model alone
    problems = reg.check(verifier=verifier, names=only)
    if verifier is None:
        click.echo("note: no public key configured: gate signatures were not checked", err=True)
    errors = [p for p in problems if p.severity == "error"]
    if as_json:
        echo_json([{"where": p.where, "message": p.message, "severity": p.severity} for p in problems])
    else:
        for p in problems:
            click.echo(f"{p.severity}: {p.where}: {p.message}")
        if not errors:
            click.echo(f"registry {reg.url}: OK ({len(problems)} warning(s))")
    if errors:
        raise StepFailed(f"registry check found {len(errors)} error(s)")


AGE_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def _parse_age(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """`--min-age`: seconds, or a number with s, m, h or d."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(s|m|min|h|d)?", value.strip())
    if not m:
        raise click.BadParameter(f"{value!r} is not an age (examples: 0, 90, 30m, 1h, 2d)")
    return float(m.group(1)) * AGE_UNITS[m.group(2) or ""]


@registry_group.command("gc")
@click.option("--apply", "--yes", "apply", is_flag=True, help="Delete them (default: only list what would be deleted).")
@click.option(
    "--min-age",
    "min_age",
    default="1h",
    show_default=True,
    callback=_parse_age,
    metavar="AGE",
    help="Keep anything younger than AGE (0, 90, 30m, 1h, 2d): a running tag may own it.",
)
@click.option("--now", is_flag=True, help="Same as --min-age 0; only when no tag can be running.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def gc_cmd(ctx: click.Context, apply: bool, min_age: float, now: bool, as_json: bool) -> None:
    """Remove blobs no version references and temporary files left by interrupted writes (dry run by default)."""
    from lepton_ci.registry.shared import human_age, human_size

    reg = _registry(ctx)
    items = reg.gc(apply=apply, min_age_s=0.0 if now else min_age)
    if as_json:
        echo_json(
            [
                {"kind": i.kind, "where": i.where, "size": i.size, "age_s": round(i.age_s, 1), "action": i.action}
                for i in items
            ]
        )
        return
    for i in items:
        click.echo(f"{i.action}: {i.kind} {i.where}  {human_size(i.size)}  {human_age(i.age_s)} old")
    gone = [i for i in items if i.action in ("deleted", "would delete")]
    total = human_size(sum(i.size for i in gone))
    if apply:
        click.echo(f"registry {reg.url}: deleted {len(gone)} file(s), {total}")
    else:
        hint = " (dry run: add --apply to delete)" if gone else ""
        click.echo(f"registry {reg.url}: {len(gone)} file(s), {total}, can be deleted{hint}")


@registry_group.command("copy")
@click.argument("source", metavar="SRC")
@click.argument("dest", metavar="DEST")
@click.option("--all", "all_models", is_flag=True, help="Every model in SRC (default: --model, else lepton.yml's).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def copy_cmd(ctx: click.Context, source: str, dest: str, all_models: bool, as_json: bool) -> None:
    """Copy models from one registry to another, byte for byte (e.g. file://.lepton/registry to oci://HOST/REPO).

    Versions keep their numbers and digests, gate signatures still verify, and the alias history keeps its
    hash chain. A model that already exists in DEST is refused. DEST is checked afterwards.
    """
    from lepton_ci.errors import RegistryError
    from lepton_ci.registry import open_registry
    from lepton_ci.registry.shared import ModelRegistry

    config = config_or_none(ctx)
    base = config.root if config else Path.cwd()
    src = open_registry(source, base)
    dst = open_registry(dest, base, create=True)
    assert isinstance(src, ModelRegistry) and isinstance(dst, ModelRegistry)  # open_registry's only kind
    names = None if all_models else [_model(ctx)]
    copied = src.copy_to(dst, names)
    problems = [p for p in dst.check() if p.severity == "error"]
    if problems:
        raise RegistryError(f"{dest} after the copy: {problems[0].where}: {problems[0].message}")
    if as_json:
        echo_json([{"model": m, "versions": v, "history_events": e} for m, v, e in copied])
        return
    for model, versions, events in copied:
        click.echo(f"{model}: {versions} version(s) and {events} alias move(s) copied to {dst.url}")
