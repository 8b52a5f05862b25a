"""Model registries. Import `open_registry` from here; backends load lazily."""

from lepton_ci.registry.base import AliasEvent, Problem, PushResult, Registry, open_registry

__all__ = ["AliasEvent", "Problem", "PushResult", "Registry", "open_registry"]
