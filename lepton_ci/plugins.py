"""One helper for every "name → module:attr" table (registry backends, deploy targets, model loaders).

Tables hold strings so that importing a table costs nothing: the CLI stays light and a backend's heavy
dependencies load only when that backend is chosen. The loaded object is checked against the kind's
protocol, so a broken plug-in fails with a clear message instead of an AttributeError later.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, TypeVar

from lepton_ci.errors import UserError

T = TypeVar("T")


def names(table: Mapping[str, str]) -> str:
    return ", ".join(table)


def load(table: Mapping[str, str], name: str, kind: str, *, protocol: type[T] | None = None) -> Any:
    """The object `table[name]` points at (a class or a factory; not instantiated)."""
    if name not in table:
        raise UserError(f"unknown {kind} {name!r} (expected one of: {names(table)})")
    module_name, _, attr = table[name].partition(":")
    module = importlib.import_module(module_name)
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise UserError(f"{kind} {name!r}: {module_name} has no {attr}") from None
    if protocol is not None and getattr(protocol, "_is_runtime_protocol", False) and isinstance(obj, type):
        missing = [m for m in _members(protocol) if not hasattr(obj, m)]
        if missing:
            raise UserError(f"{kind} {name!r} ({table[name]}) lacks {', '.join(missing)}")
    return obj


def _members(protocol: type) -> list[str]:
    """Public methods and attributes the protocol declares (3.11 has no public API for this)."""
    declared = set(vars(protocol)) | set(getattr(protocol, "__annotations__", {}))
    return sorted(a for a in declared if not a.startswith("_"))
