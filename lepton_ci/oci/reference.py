"""`oci://HOST[:PORT]/REPO` as lepton-ci reads it: which host, which repository, and whether plain HTTP
is allowed.

TLS is the rule. Plain HTTP is used only for a loopback host (a registry on the runner itself, as in tests
and `docker run registry` setups) or for a host named in `--insecure-registry` /
`LEPTON_CI_INSECURE_REGISTRY` (comma-separated `host[:port]`), the same opt-in Docker users know.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

from lepton_ci.errors import ConfigError

# The distribution spec's repository name grammar (path components of lowercase alphanumerics joined by
# one separator), and its tag grammar.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_HOST_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(?::\d{1,5})?")


@dataclass(frozen=True)
class RegistryRef:
    host: str  # host[:port], as credentials in the docker config are keyed
    repository: str  # the base repository; each model lives at <repository>/<model>
    scheme: str  # "https", or "http" for loopback and explicitly insecure hosts

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def url(self) -> str:
        return f"oci://{self.host}/{self.repository}"


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.index("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    name = _hostname(host).lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def insecure_hosts(extra: tuple[str, ...] = ()) -> set[str]:
    listed = os.environ.get("LEPTON_CI_INSECURE_REGISTRY", "")
    return {h.strip().lower() for h in (*listed.split(","), *extra) if h.strip()}


def parse_oci_url(url: str, *, insecure: tuple[str, ...] = ()) -> RegistryRef:
    """Parse and validate an `oci://` registry URL; a bad one is a one-line ConfigError naming the part."""
    if not url.startswith("oci://"):
        raise ConfigError(f"registry URL {url!r} does not start with oci://")
    rest = url[len("oci://") :].rstrip("/")
    host, _, repository = rest.partition("/")
    if not host or not _HOST_RE.fullmatch(host):
        raise ConfigError(f"registry URL {url!r}: expected oci://HOST[:PORT]/REPOSITORY, the host is not valid")
    if "@" in host:
        raise ConfigError(f"registry URL {url!r}: put credentials in LEPTON_REGISTRY_USER/PASSWORD, not the URL")
    if not repository:
        raise ConfigError(f"registry URL {url!r}: expected oci://HOST[:PORT]/REPOSITORY, the repository is missing")
    if not REPOSITORY_RE.fullmatch(repository) or len(repository) > 200:
        raise ConfigError(
            f"registry URL {url!r}: repository {repository!r} is not a valid OCI repository name "
            "(lowercase letters, digits and . _ - separators, path components joined by /)"
        )
    lowered = host.lower()
    scheme = "http" if is_loopback(host) or lowered in insecure_hosts(insecure) else "https"
    return RegistryRef(host=lowered, repository=repository, scheme=scheme)
