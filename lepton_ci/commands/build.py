"""`lepton-ci build`: the serving image of a blessed version (full build, or model-only on a base image)."""

from __future__ import annotations

from pathlib import Path

import click

from lepton_ci.commands._common import config_from, echo_json


@click.command("build")
@click.option(
    "-v", "--version", "ref", metavar="REF", help="Version, alias or digest (default: the version `tag` just made)."
)
@click.option(
    "--on-top-of",
    "on_top_of",
    metavar="IMAGE",
    help="Model-only rebuild without a Docker Engine: append the model layer to this serving base image in the "
    "registry (default: build.on_top_of, else the base a full build pushed to build.image, if any).",
)
@click.option(
    "--image",
    metavar="REPOSITORY",
    help="Repository to tag and push, HOST/PATH (default: LEPTON_CI_BUILD_IMAGE, else build.image); e.g. "
    "$CI_REGISTRY_IMAGE/serve in GitLab.",
)
@click.option(
    "--push/--no-push",
    default=None,
    help="Push to build.image (default: build.push, else push when build.image is set).",
)
@click.option(
    "--tag", "tags", multiple=True, metavar="TAG", help="Another tag besides v<N> and sha-<commit>; repeatable."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where to write image.json (default: .lepton/image.json).",
)
@click.option(
    "--progress",
    type=click.Choice(["auto", "plain", "quiet"]),
    default="auto",
    show_default=True,
    help="Build output: plain lines, quiet (only a failure's last lines), or auto (folded in CI).",
)
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    metavar="PEM",
    help="Public key the blessing must verify with; repeatable (default: LEPTON_CI_PUBLIC_KEY, then "
    "signing.public_key).",
)
@click.option("--json", "as_json", is_flag=True, help="Print image.json.")
@click.pass_context
def build_cmd(
    ctx: click.Context,
    ref: str | None,
    on_top_of: str | None,
    image: str | None,
    push: bool | None,
    tags: tuple[str, ...],
    output: Path | None,
    progress: str,
    public_keys: tuple[str, ...],
    as_json: bool,
) -> None:
    """Build the serving image of a blessed version, push it to build.image, and write image.json."""
    from lepton_ci.forge.outputs import emit
    from lepton_ci.steps.build import build

    record = build(
        config_from(ctx),
        ref=ref,
        on_top_of=on_top_of,
        image=image,
        push=push,
        tags=tags,
        output=output,
        progress=progress,
        public_keys=public_keys,
    )
    emit({"image": record.image, "image-digest": record.digest, "build-mode": record.mode})
    if as_json:
        echo_json(record.to_dict())
        return
    click.echo(
        f"{record.model.get('name')} v{record.model.get('version')}: {record.image} ({record.mode}, "
        f"{record.size_bytes:,} bytes, {record.pushed_bytes:,} pushed)"
    )
