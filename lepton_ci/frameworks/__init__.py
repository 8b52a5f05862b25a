"""The model-loader seam: one small module per framework, imported only when a model of it loads.

A loader turns a file into a `LoadedModel` that the model server can describe (V2 metadata) and run.
Adding torch or keras is one module and one line in LOADERS.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

from lepton_ci.errors import UserError

LOADERS = {"sklearn": "lepton_ci.frameworks.sklearn:SklearnLoader"}


class LoadedModel(Protocol):
    def metadata(self) -> dict[str, Any]:
        """{"platform", "inputs": [{name, datatype, shape}], "outputs": [...]} as the V2 protocol reports."""

    def predict(self, inputs: dict[str, Any], outputs: list[str] | None) -> dict[str, Any]:
        """Named numpy arrays in, named numpy arrays out."""

    def example_request(self) -> dict[str, Any]:
        """A valid V2 infer request body, used as the deploy smoke test."""


class ModelLoader(Protocol):
    def load(self, path: Path) -> LoadedModel: ...


def get_loader(framework: str) -> ModelLoader:
    if framework not in LOADERS:
        raise UserError(f"unknown model framework {framework!r} (expected one of: {', '.join(LOADERS)})")
    module, attr = LOADERS[framework].split(":")
    return getattr(importlib.import_module(module), attr)()
