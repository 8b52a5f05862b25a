"""`lepton-ci keys generate|public|id|one-line|registry-key`: the key pair behind blessings, and the
registry key for encryption at rest."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("keys")
def keys_group() -> None:
    """Create and inspect the signing key pair (private: the gate's secret; public: commit it)."""


@keys_group.command("generate")
@click.option(
    "-d",
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Where to write NAME.key (private, mode 0600) and NAME.pub.",
)
@click.option("-n", "--name", default="lepton-signing", show_default=True, help="File name stem.")
@click.option("--force", is_flag=True, help="Replace existing files (old blessings then need the old public key).")
def generate_cmd(directory: Path, name: str, force: bool) -> None:
    """Write a new EC P-256 key pair. The private key never goes to stdout."""
    from lepton_ci import signing

    priv, pub = signing.generate_pair(directory, name, force=force)
    key_id = signing.key_id_of_pem(pub.read_bytes())
    click.echo(f"private key: {priv} (store it as the CI secret LEPTON_CI_SIGNING_KEY, then delete this file)")
    click.echo(f"public key:  {pub} (commit it and set signing.public_key: {pub.name} in lepton.yml)")
    click.echo(f"key id:      {key_id}")
    click.echo("for secret stores that drop line breaks: lepton-ci keys one-line " + str(priv))


@keys_group.command("public")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the public key here instead of stdout.",
)
def public_cmd(output: Path | None) -> None:
    """Print the public half of LEPTON_CI_SIGNING_KEY (or LEPTON_CI_SIGNING_KEY_FILE)."""
    from lepton_ci import signing
    from lepton_ci.errors import UserError

    private = signing.load_private_key()
    if private is None:
        raise UserError(f"neither {signing.KEY_ENV} nor {signing.KEY_FILE_ENV} is set")
    pem = private.public.pem
    if output:
        output.write_bytes(pem)
        click.echo(f"{output} (key id {private.public.key_id})")
    else:
        click.echo(pem.decode(), nl=False)


@keys_group.command("id")
@click.argument("public_key")
def id_cmd(public_key: str) -> None:
    """Print the key id of a public key file (what gate records name in signature.key_id)."""
    from lepton_ci import signing

    click.echo(signing.parse_public_key(public_key, Path.cwd(), "PUBLIC_KEY").key_id)


@keys_group.command("one-line")
@click.argument("private_key", type=click.Path(path_type=Path, dir_okay=False))
def one_line_cmd(private_key: Path) -> None:
    """Print a private key file as one base64 line (for secret stores that drop line breaks)."""
    from lepton_ci import signing
    from lepton_ci.errors import UserError

    try:
        pem = private_key.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"cannot read the private key file: {getattr(exc, 'strerror', None) or 'not text'}", where=str(private_key)
        ) from None
    click.echo(signing.one_line_private(signing.decode_private(pem, str(private_key))))


@keys_group.command("registry-key")
@click.option("--id", "show_id", is_flag=True, help="Print the key id of LEPTON_CI_REGISTRY_KEY instead.")
def registry_key_cmd(show_id: bool) -> None:
    """Print a new random key for encrypting registry blobs at rest (store it as the CI secret
    LEPTON_CI_REGISTRY_KEY), or with --id the id of the key in LEPTON_CI_REGISTRY_KEY."""
    from lepton_ci.errors import ConfigError
    from lepton_ci.registry import encryption

    if show_id:
        key = encryption.load_key()
        if key is None:
            raise ConfigError(f"{encryption.KEY_ENV} is not set")
        click.echo(key.key_id)
        return
    click.echo(encryption.new_key_text())
