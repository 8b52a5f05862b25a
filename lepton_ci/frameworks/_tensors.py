"""Checking request tensors against a saved model's description, shared by the torch and keras adapters.

The server has already decoded the V2 request into numpy arrays; what is left is the model's own
contract: every input named once, the right kind of number, the saved shape (-1 is any), the same
number of rows in every input. A mismatch is a ValueError, which the server answers as a 400.
"""

from __future__ import annotations

from typing import Any

from lepton_ci.frameworks import _formats


def check_inputs(inputs: dict[str, Any], specs: list[dict[str, Any]], dtypes: list[Any]) -> list[Any]:
    """The request's arrays in the model's input order, cast to the wire dtype, shapes checked; one row
    sent without its batch axis is taken as a batch of one."""
    import numpy as np

    names = [s["name"] for s in specs]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise ValueError(f"missing input {missing[0]!r} (the model takes {', '.join(map(repr, names))})")
    extra = sorted(set(inputs) - set(names))
    if extra:
        raise ValueError(f"unknown input {extra[0]!r} (the model takes {', '.join(map(repr, names))})")
    arrays = []
    rows = None
    for spec, dtype in zip(specs, dtypes, strict=True):
        name, shape = spec["name"], spec["shape"]
        arr = np.asarray(inputs[name])
        if (
            arr.dtype.kind == "O"
            or (arr.dtype.kind == "f" and dtype.kind in "biu")
            or (arr.dtype.kind in "iuf" and dtype.kind == "b")
        ):
            raise ValueError(f"input {name!r} must be {_formats.wire_datatype(spec['datatype'])}, got {arr.dtype}")
        if arr.ndim == len(shape) - 1:
            arr = arr.reshape(1, *arr.shape)
        if arr.ndim != len(shape) or any(d != -1 and d != a for d, a in zip(shape[1:], arr.shape[1:], strict=True)):
            raise ValueError(f"input {name!r} must have shape {shape} (-1: any), got {list(arr.shape)}")
        if rows is not None and arr.shape[0] != rows:
            raise ValueError(f"input {name!r} has {arr.shape[0]} rows, the first input {rows}")
        rows = arr.shape[0]
        arrays.append(np.ascontiguousarray(arr, dtype=dtype))
    return arrays


def example_request_for(specs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row of zeros (false, empty strings) per input: the deploy smoke test."""
    tensors = []
    for spec in specs:
        dims = [1, *(d if d > 0 else 1 for d in spec["shape"][1:])]
        count = 1
        for d in dims:
            count *= d
        datatype = _formats.wire_datatype(spec["datatype"])
        zero: Any = False if datatype == "BOOL" else "" if datatype == "BYTES" else 0
        tensors.append({"name": spec["name"], "shape": dims, "datatype": datatype, "data": [zero] * count})
    return {"id": "lepton-ci-smoke", "inputs": tensors}
