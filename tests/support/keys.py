"""Fixed EC P-256 key pairs for tests only (never trust them anywhere else).

`PRIVATE_PEM` is what the gate job holds (LEPTON_CI_SIGNING_KEY); `PUBLIC_PEM` is what deploy trusts.
`PRIVATE_ONE_LINE` is the same private key as one base64 line, for CI runners whose secret plumbing
drops line breaks (act -s, gitlab-ci-local --variable). `OTHER_*` is an attacker's or an old key.
"""

from pathlib import Path

PRIVATE_PEM = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgBZwHWX/PgV8ezZQr
Z1CfQsS5tk9Y885NtbxyvLb1P7ahRANCAAQD7/jwp/NLr/apoJcdzWZ8OSGzHPfv
6Jzybjw3pu7h2DKwhNq2ZQX2r41zub59lIoNJRs0MR0kn1hfs8GWq+W3
-----END PRIVATE KEY-----
"""

PUBLIC_PEM = """-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEA+/48KfzS6/2qaCXHc1mfDkhsxz3
7+ic8m48N6bu4dgysITatmUF9q+Nc7m+fZSKDSUbNDEdJJ9YX7PBlqvltw==
-----END PUBLIC KEY-----
"""

PRIVATE_ONE_LINE = (
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgBZwHWX/PgV8ezZQrZ1CfQsS5tk9Y885NtbxyvLb1P7ahRANCAAQD7/jwp/NLr"
    "/apoJcdzWZ8OSGzHPfv6Jzybjw3pu7h2DKwhNq2ZQX2r41zub59lIoNJRs0MR0kn1hfs8GWq+W3"
)

OTHER_PRIVATE_PEM = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgFOEyg4bKkTywRwG/
YKyrS8iwG9rKOgOWhKIocO3lFsihRANCAASI7W/YnienXhwU28/+l08RrpUVRnBQ
/72WBXIcxpoZu+IjaSfsEA98L8wcSVt0rp6C1oOesitjoHrR1XhF27J3
-----END PRIVATE KEY-----
"""

OTHER_PUBLIC_PEM = """-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEiO1v2J4np14cFNvP/pdPEa6VFUZw
UP+9lgVyHMaaGbviI2kn7BAPfC/MHElbdK6egtaDnrIrY6B60dV4Rduydw==
-----END PUBLIC KEY-----
"""


def commit_public_key(project: Path, name: str = "lepton-signing.pub") -> None:
    """What docs/keys.md tells users to do: the public key beside lepton.yml, named in signing.public_key."""
    (project / name).write_text(PUBLIC_PEM)
    with open(project / "lepton.yml", "a") as f:
        f.write(f"signing:\n  public_key: {name}\n")
