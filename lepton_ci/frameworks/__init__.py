"""The model-loader seam: one small module per framework, imported only when a model of it loads.

A loader turns a file into a `LoadedModel` that the model server can describe (V2 metadata) and run.
Adding torch or keras is one module and one line in LOADERS; nothing here imports numpy or a framework.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from lepton_ci.errors import UserError

# name -> "module:attr" of a loader class, imported lazily so an unused framework costs nothing.
LOADERS: dict[str, str] = {"sklearn": "lepton_ci.frameworks.sklearn:SklearnLoader"}


@runtime_checkable
class LoadedModel(Protocol):
    """What the model server needs from a model, whatever the framework."""

    def metadata(self) -> dict[str, Any]:
        """{"platform", "inputs": [{name, datatype, shape}], "outputs": [...]} as V2 model metadata reports."""
        ...

    def predict(self, inputs: dict[str, Any], outputs: list[str] | None) -> dict[str, Any]:
        """Named numpy arrays in, named numpy arrays out (None: default outputs). ValueError = bad request."""
        ...

    def example_request(self) -> dict[str, Any]:
        """A valid V2 infer request body, used as the deploy smoke test."""
        ...


class ModelLoader(Protocol):
    """Turns a saved model file into a LoadedModel; raises UserError for a file it cannot use."""

    def load(self, path: Path) -> LoadedModel: ...


def frameworks() -> list[str]:
    """Framework names the server can load (for help texts and config validation)."""
    return list(LOADERS)


def get_loader(framework: str) -> ModelLoader:
    """The loader for `framework`; the framework's module is imported only now."""
    if framework not in LOADERS:
        raise UserError(f"unknown model framework {framework!r} (expected one of: {', '.join(LOADERS)})")
    module, attr = LOADERS[framework].split(":")
    return getattr(importlib.import_module(module), attr)()
