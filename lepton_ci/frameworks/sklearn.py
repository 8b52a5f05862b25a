"""scikit-learn models saved with skops (safe) or joblib: save, load, describe for V2, predict, score.

skops (`.skops`) stores the estimator as a schema of known types: loading it builds only types the
trusted-types policy below allows (scikit-learn, numpy and scipy classes and a few builtins), so a
file that names anything else is refused instead of run. joblib stays supported for existing
projects: it is a pickle, safe only because deploy verifies the bytes against the blessing first.

Input width comes from `n_features_in_`, which every fitted estimator and pipeline on numeric data
sets; classifiers with `predict_proba` expose it as a second output. joblib, numpy and sklearn are
imported inside functions so `import lepton_ci.frameworks` stays cheap.

Loading a joblib file runs pickle: load only models from a registry you trust (the deploy step
checks the version's digests before it gets here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lepton_ci.errors import UserError
from lepton_ci.serve.v2 import NUMPY_TO_V2

INPUT_NAME = "input-0"


# The skops trusted-types policy: a type may be built on load only if its module is one of these (or
# under one of them). Explicit so a reviewer sees what a .skops file can instantiate.
TRUSTED_MODULES = ("sklearn", "numpy", "scipy", "builtins", "collections", "joblib.numpy_pickle_utils")


def save(model: Any, path: str | Path) -> Path:
    """Save a fitted estimator the way the loader reads it: skops for a .skops name, else joblib
    (a .joblib or .pkl name)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == ".skops":
        import skops.io

        skops.io.dump(model, target)
    else:
        import joblib

        joblib.dump(model, target)
    return target


def trusted(type_name: str) -> bool:
    """True when `type_name` ("module.Class") falls under TRUSTED_MODULES."""
    return any(type_name == m or type_name.startswith(m + ".") for m in TRUSTED_MODULES)


def log_scores(
    model: Any, X: Any, y: Any, scoring: list[str] | tuple[str, ...] = ("accuracy",), prefix: str = "eval"
) -> dict[str, float]:
    """Score a fitted estimator with scikit-learn's named scorers and log each as `<prefix>.<name>` into the
    run record (a `neg_*` scorer is logged without the prefix and sign: neg_log_loss -> log_loss)."""
    from sklearn.metrics import get_scorer

    from lepton_ci.tracking import log_metrics

    scores: dict[str, float] = {}
    for name in scoring:
        value = float(get_scorer(name)(model, X, y))
        key = name.removeprefix("neg_") if name.startswith("neg_") else name
        scores[f"{prefix}.{key}" if prefix else key] = -value if name.startswith("neg_") else value
    log_metrics(scores)
    return scores


def log_estimator_params(model: Any) -> dict[str, Any]:
    """Log the estimator's own `get_params()` (JSON values only; nested estimators by class name)."""
    from lepton_ci.tracking import log_params

    params: dict[str, Any] = {}
    for key, value in model.get_params(deep=True).items():
        if value is None or isinstance(value, (str, int, float, bool)):
            if not (isinstance(value, float) and value != value):
                params[key] = value
        elif hasattr(value, "get_params"):
            params[key] = type(value).__name__
    if params:
        log_params({"estimator": params})
    return params


class SklearnModel:
    """A fitted estimator behind the `LoadedModel` interface: one FP64 matrix in, named arrays out."""

    input_name = INPUT_NAME
    # Rows are independent and predict only reads the fitted estimator (see the batching contract in
    # lepton_ci/serve/batcher.py).
    supports_batching = True
    thread_safe = True

    def __init__(self, model: Any) -> None:
        self.model = model
        self.n_features = int(getattr(model, "n_features_in_", 0) or 0) or None
        self.has_proba = _has_method(model, "predict_proba")
        classes = getattr(model, "classes_", None)
        self.n_classes = len(classes) if classes is not None else None

    def output_names(self) -> list[str]:
        return ["predict", "predict_proba"] if self.has_proba else ["predict"]

    def metadata(self) -> dict[str, Any]:
        outputs = [{"name": "predict", "datatype": self._predict_datatype(), "shape": [-1]}]
        if self.has_proba:
            outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, self.n_classes or -1]})
        return {
            "platform": "sklearn",
            "inputs": [{"name": self.input_name, "datatype": "FP64", "shape": [-1, self.n_features or -1]}],
            "outputs": outputs,
        }

    def _predict_datatype(self) -> str:
        """Classifiers predict labels of `classes_`' dtype (strings are BYTES); regressors FP64."""
        classes = getattr(self.model, "classes_", None)
        if classes is not None and hasattr(classes, "dtype"):
            return NUMPY_TO_V2.get(str(classes.dtype), "FP64" if classes.dtype.kind == "f" else "BYTES")
        return "FP64"

    def predict(self, inputs: dict[str, Any], outputs: list[str] | None) -> dict[str, Any]:
        """Run the estimator. ValueError means the request does not fit the model (HTTP 400)."""
        import numpy as np

        if self.input_name not in inputs:
            raise ValueError(f"missing input {self.input_name!r} (got {', '.join(map(repr, sorted(inputs)))})")
        extra = sorted(set(inputs) - {self.input_name})
        if extra:
            raise ValueError(f"unknown input {extra[0]!r}: this model takes one input, {self.input_name!r}")
        wanted = outputs or ["predict"]
        for name in wanted:
            if name not in self.output_names():
                raise ValueError(f"unknown output {name!r} (available: {', '.join(self.output_names())})")
        x = np.asarray(inputs[self.input_name])
        if x.dtype.kind not in "biuf":
            raise ValueError(f"input {self.input_name!r} must be numeric (the model takes FP64), got {x.dtype}")
        if x.ndim == 1:
            x = x.reshape(1, -1)  # one row sent as a vector
        if x.ndim != 2:
            raise ValueError(
                f"input {self.input_name!r} must be 2-D [batch, {self.n_features or 'features'}], "
                f"got shape {list(x.shape)}"
            )
        if self.n_features and x.shape[1] != self.n_features:
            raise ValueError(
                f"input {self.input_name!r} has {x.shape[1]} features, the model expects {self.n_features}"
            )
        if x.shape[0] == 0:  # sklearn refuses empty input; an empty batch has an empty answer
            classes = getattr(self.model, "classes_", None)
            empty = {
                "predict": np.asarray(classes[:0]) if classes is not None else np.zeros(0),
                "predict_proba": np.zeros((0, self.n_classes or 0)),
            }
            return {name: empty[name] for name in wanted}
        x = x.astype(np.float64, copy=False)
        result: dict[str, Any] = {}
        for name in wanted:
            if name == "predict":
                result[name] = np.asarray(self.model.predict(x))
            else:
                result[name] = np.asarray(self.model.predict_proba(x), dtype=np.float64)
        return result

    def example_request(self) -> dict[str, Any]:
        """One row of zeros of the model's width: the deploy smoke test."""
        n = self.n_features or 1
        return {
            "id": "lepton-ci-smoke",
            "inputs": [{"name": self.input_name, "shape": [1, n], "datatype": "FP64", "data": [0.0] * n}],
        }


def _has_method(model: Any, name: str) -> bool:
    """`hasattr` that survives sklearn's `available_if` raising something other than AttributeError."""
    try:
        return callable(getattr(model, name, None))
    except Exception:  # noqa: BLE001 - e.g. SVC(probability=False) raises from the property
        return False


def _load_skops(path: Path) -> Any:
    """A .skops file under the trusted-types policy: any type outside it is refused before loading."""
    try:
        import skops.io
    except ImportError:
        raise UserError(
            f"{path} is a skops file and skops is not installed: pip install 'lepton-ci[sklearn]'"
        ) from None
    try:
        types = skops.io.get_untrusted_types(file=path)
    except Exception as exc:  # noqa: BLE001 - a damaged archive fails in many ways
        raise UserError(f"cannot read the skops file {path}: {type(exc).__name__}: {exc}") from None
    refused = [t for t in types if not trusted(t)]
    if refused:
        raise UserError(
            f"{path} asks to build {refused[0]}, which is outside the trusted-types policy "
            f"({', '.join(TRUSTED_MODULES)}); refusing to load it"
        )
    try:
        return skops.io.load(path, trusted=list(types))
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"cannot load the skops file {path}: {type(exc).__name__}: {exc}") from None


class SklearnLoader:
    """Loads a .skops file (safe) or a `joblib.dump`-ed estimator (any extension; .joblib and .pkl are
    the usual ones). A file whose name ends in .skops must be a skops file: a pickle there is refused."""

    def load(self, path: Path, device: str | None = None) -> SklearnModel:
        from lepton_ci.frameworks import _formats

        path = Path(path)
        if not path.is_file():
            raise UserError(f"model file not found: {path}")
        found = _formats.sniff(path)
        if found == "skops":
            model = _load_skops(path)
        elif path.suffix == ".skops":
            raise _formats.refuse(path, found, "sklearn", "a skops file")
        elif found not in ("pickle", "unknown"):  # "unknown": joblib has compressors sniff does not name
            raise _formats.refuse(path, found, "sklearn", "a skops or joblib file")
        else:
            model = _load_joblib(path)
        if not _has_method(model, "predict"):
            raise UserError(f"{path} holds a {type(model).__name__}, which has no predict()")
        return SklearnModel(model)


def _load_joblib(path: Path) -> Any:
    try:
        import joblib
    except ImportError:
        raise UserError(
            "serving a scikit-learn model needs joblib and scikit-learn: pip install 'lepton-ci[sklearn]'"
        ) from None
    try:
        return joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - joblib/pickle raise many types for a file that is not a model
        raise UserError(f"cannot load a scikit-learn model from {path}: {type(exc).__name__}: {exc}") from None
