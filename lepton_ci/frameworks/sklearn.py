"""scikit-learn models saved with joblib: load, describe for V2, predict.

Input width comes from `n_features_in_`, which every fitted estimator and pipeline sets; classifiers
with `predict_proba` expose it as a second output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lepton_ci.errors import UserError
from lepton_ci.serve.v2 import NUMPY_TO_V2

def save(model: Any, path: str | Path) -> Path:
    import joblib

    joblib.dump(model, path)
    return Path(path)


class SklearnModel:
    input_name = "input-0"

    def __init__(self, model: Any) -> None:
        self.model = model
        self.n_features = int(getattr(model, "n_features_in_", 0)) or None
        self.has_proba = hasattr(model, "predict_proba")
        classes = getattr(model, "classes_", None)
        self.n_classes = len(classes) if classes is not None else None
        self._predict_dtype: str | None = None

    def metadata(self) -> dict[str, Any]:
        outputs = [{"name": "predict", "datatype": self._predict_dtype or self._guess_predict_dtype(), "shape": [-1]}]
        if self.has_proba:
            outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, self.n_classes or -1]})
        return {"platform": "sklearn", "inputs": [{"name": self.input_name, "datatype": "FP64",
                                                   "shape": [-1, self.n_features or -1]}], "outputs": outputs}

    def _guess_predict_dtype(self) -> str:
        classes = getattr(self.model, "classes_", None)
        if classes is not None:
            return NUMPY_TO_V2.get(str(classes.dtype), "BYTES")
        return "FP64"

    def predict(self, inputs: dict[str, Any], outputs: list[str] | None) -> dict[str, Any]:
        import numpy as np

        if self.input_name in inputs:
            x = inputs[self.input_name]
        elif len(inputs) == 1:
            x = next(iter(inputs.values()))
        else:
            raise ValueError(f"expected one input named {self.input_name!r}, got {sorted(inputs)}")
        x = np.asarray(x)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2:
            raise ValueError(f"input must be 2-D [batch, features], got shape {list(x.shape)}")
        if self.n_features and x.shape[1] != self.n_features:
            raise ValueError(f"input has {x.shape[1]} features, the model expects {self.n_features}")
        wanted = outputs or ["predict"]
        result: dict[str, Any] = {}
        for name in wanted:
            if name == "predict":
                result[name] = np.asarray(self.model.predict(x))
            elif name == "predict_proba" and self.has_proba:
                result[name] = np.asarray(self.model.predict_proba(x), dtype=np.float64)
            else:
                raise ValueError(f"unknown output {name!r} (available: {', '.join(o['name'] for o in self.metadata()['outputs'])})")
        return result

    def example_request(self) -> dict[str, Any]:
        n = self.n_features or 1
        return {"inputs": [{"name": self.input_name, "shape": [1, n], "datatype": "FP64", "data": [0.0] * n}]}


class SklearnLoader:
    def load(self, path: Path) -> SklearnModel:
        import joblib

        try:
            model = joblib.load(path)
        except FileNotFoundError:
            raise UserError(f"model file not found: {path}") from None
        except Exception as exc:  # joblib/pickle raise many types for a file that is not a model
            raise UserError(f"cannot load a scikit-learn model from {path}: {type(exc).__name__}: {exc}") from None
        if not hasattr(model, "predict"):
            raise UserError(f"{path} holds a {type(model).__name__}, which has no predict()")
        return SklearnModel(model)
