"""The model-loader seam: one small module per framework, imported only when a model of it loads.

A loader turns a file into a `LoadedModel` that the model server can describe (V2 metadata) and run.
Adding torch or keras is one module and one line in LOADERS; nothing here imports numpy or a framework.

Loader contract on trust: a loader is only ever handed files that `deploy` has just verified against the
blessing (every file's sha256 against the signed manifest, nothing extra, no symbolic links). A loader must
load only the path it is given and files beside it in the same verified directory, never fetch or follow
anything else, and must not be called by code that has not verified the bytes first. Formats that run code
on load (pickle, joblib) are safe only under this rule; the torch, keras and skops formats run no code on
load, and each loader refuses a pickle offered where its safe format is expected.

Device: `load(path, device=None)` may take a device ("auto", "cpu", "cuda", "cuda:N"); None reads
$LEPTON_CI_DEVICE, then "auto" (CUDA when present). The server calls `load(path)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from lepton_ci import plugins

# name -> "module:attr" of a loader class, imported lazily so an unused framework costs nothing.
LOADERS: dict[str, str] = {
    "sklearn": "lepton_ci.frameworks.sklearn:SklearnLoader",
    "torch": "lepton_ci.frameworks.torch:TorchLoader",
    "keras": "lepton_ci.frameworks.keras:KerasLoader",
}


@runtime_checkable
class LoadedModel(Protocol):
    """What the model server needs from a model, whatever the framework.

    Optional class attributes (absent means False): `supports_batching`, the model keeps the batching
    contract (batch on the first axis of every input and output, rows independent; see
    lepton_ci/serve/batcher.py), so the server may join requests into one predict call; `thread_safe`,
    predict may run in several threads at once when requests are not batched.
    """

    def metadata(self) -> dict[str, Any]:
        """{"platform", "inputs": [{name, datatype, shape}], "outputs": [...]} as V2 model metadata reports."""
        ...

    def predict(self, inputs: dict[str, Any], outputs: list[str] | None) -> dict[str, Any]:
        """Named numpy arrays in, named numpy arrays out (None: default outputs). ValueError = bad request."""
        ...

    def example_request(self) -> dict[str, Any]:
        """A valid V2 infer request body, used as the deploy smoke test."""
        ...


@runtime_checkable
class ModelLoader(Protocol):
    """Turns a saved model file into a LoadedModel; raises UserError for a file it cannot use."""

    def load(self, path: Path) -> LoadedModel: ...


def frameworks() -> list[str]:
    """Framework names the server can load (for help texts and config validation)."""
    return list(LOADERS)


def get_loader(framework: str) -> ModelLoader:
    """The loader for `framework`; the framework's module is imported only now."""
    loader: ModelLoader = plugins.load(LOADERS, framework, "model framework", protocol=ModelLoader)()
    return loader
