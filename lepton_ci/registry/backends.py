"""Which backend serves a registry URL: one scheme -> "module:attr" table, read through `plugins.load`.

Strings, so that choosing a backend imports only that backend (the OCI client stays unloaded for
file://). An entry names a `shared.ModelRegistry` subclass whose only content is its `storage_class`,
the backend's implementation of `base.Storage`; so a new backend is one module of storage primitives,
a two-line binding class and one line here, and everything else is shared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from lepton_ci import plugins
from lepton_ci.errors import RegistryError
from lepton_ci.registry.base import Registry

BACKENDS: Final[dict[str, str]] = {
    "file": "lepton_ci.registry.local:LocalRegistry",
    "oci": "lepton_ci.registry.oci:OciRegistry",
}

# Schemes the config accepts whose backend is not in this release: a clear refusal, not "not understood".
PLANNED: Final[dict[str, str]] = {}


def open_registry(url: str, base_dir: Path, *, create: bool = False) -> Registry:
    """Open the registry at `url`; relative file:// paths are relative to `base_dir` (the config's dir).

    Without `create`, a registry that does not exist raises `NotFound` (nothing was ever tagged there);
    anything that exists but is not a sound registry raises `RegistryError`.
    """
    from lepton_ci.registry.shared import ModelRegistry

    scheme, sep, _ = url.partition("://")
    if sep and scheme in PLANNED:
        raise RegistryError(f"registry {url!r}: {PLANNED[scheme]}")
    if not sep or scheme not in BACKENDS:
        raise RegistryError(f"registry URL {url!r} not understood (expected file://PATH or oci://HOST/REPO)")
    backend = plugins.load(BACKENDS, scheme, "registry backend")
    if not (isinstance(backend, type) and issubclass(backend, ModelRegistry)) or backend.storage_class is None:
        raise RegistryError(
            f"registry backend {scheme!r} ({BACKENDS[scheme]}) is not a ModelRegistry bound to a storage"
        )
    return backend.open(url, Path(base_dir), create=create)  # checks the storage against `Storage`
