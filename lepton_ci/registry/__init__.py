"""Model registries. Import `open_registry` from here; backends load lazily through `backends.BACKENDS`.

Layout: `base` (types and the `Registry` / `Storage` protocols), `shared` (everything backend-neutral:
references, verification, history chain, push, fetch, check, gc), `backends` (scheme table and
`open_registry`), one module per storage backend (`local` for file://).
"""

from lepton_ci.registry.backends import BACKENDS, open_registry
from lepton_ci.registry.base import AliasEvent, GcItem, Problem, PushResult, Registry, Storage, Stored, Verifier

__all__ = [
    "BACKENDS",
    "AliasEvent",
    "GcItem",
    "Problem",
    "PushResult",
    "Registry",
    "Storage",
    "Stored",
    "Verifier",
    "open_registry",
]
