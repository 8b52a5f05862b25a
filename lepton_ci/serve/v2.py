"""Encoding and decoding of V2 (Open Inference Protocol) tensors.

Requests are validated strictly (datatype known, shape non-negative, element count matches the data)
so a bad request gets a 400 naming the input, never a 500 from deep inside a model.
"""

from __future__ import annotations

import json
from typing import Any

V2_TO_NUMPY = {"BOOL": "bool", "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64", "UINT8": "uint8",
               "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64", "FP16": "float16", "FP32": "float32",
               "FP64": "float64", "BYTES": "object"}
NUMPY_TO_V2 = {v: k for k, v in V2_TO_NUMPY.items()}


class BadRequest(ValueError):
    """The client sent something the protocol does not allow: HTTP 400."""


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        out: list[Any] = []
        for item in data:
            if isinstance(item, list):
                out.extend(_flatten(item))
            else:
                out.append(item)
        return out
    return [data]


def split_binary(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """Separate the JSON header from appended binary tensor data (the binary-data extension)."""
    try:
        if header_length is not None:
            n = int(header_length)
            if n < 0 or n > len(body):
                raise BadRequest("Inference-Header-Content-Length is larger than the body")
            return json.loads(body[:n]), body[n:]
        return json.loads(body), b""
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def decode_inputs(request: Any, binary: bytes = b"") -> dict[str, Any]:
    import numpy as np

    if not isinstance(request, dict):
        raise BadRequest("request body must be a JSON object")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("request needs a non-empty 'inputs' list")
    out: dict[str, Any] = {}
    offset = 0
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise BadRequest(f"inputs[{i}] must be an object")
        name = tensor.get("name")
        dtype = tensor.get("datatype")
        shape = tensor.get("shape")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"inputs[{i}] needs a 'name'")
        if dtype not in V2_TO_NUMPY:
            raise BadRequest(f"input {name!r}: datatype {dtype!r} is not one of {', '.join(V2_TO_NUMPY)}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers")
        count = 1
        for d in shape:
            count *= d
        params = tensor.get("parameters") or {}
        if "binary_data_size" in params:
            size = int(params["binary_data_size"])
            chunk = binary[offset:offset + size]
            offset += size
            if len(chunk) != size:
                raise BadRequest(f"input {name!r}: binary data is shorter than binary_data_size")
            if dtype == "BYTES":
                raise BadRequest(f"input {name!r}: binary BYTES tensors are not supported; send JSON data")
            arr = np.frombuffer(chunk, dtype=np.dtype(V2_TO_NUMPY[dtype]).newbyteorder("<"))
        else:
            if "data" not in tensor:
                raise BadRequest(f"input {name!r} has no 'data'")
            flat = _flatten(tensor["data"])
            try:
                arr = np.asarray(flat, dtype=V2_TO_NUMPY[dtype])
            except (TypeError, ValueError, OverflowError) as exc:
                raise BadRequest(f"input {name!r}: data does not fit datatype {dtype}: {exc}") from None
        if arr.size != count:
            raise BadRequest(f"input {name!r}: shape {shape} needs {count} elements, got {arr.size}")
        out[name] = arr.reshape(shape)
    return out


def requested_outputs(request: dict[str, Any]) -> list[str] | None:
    outputs = request.get("outputs")
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
        raise BadRequest("'outputs' must be a list of objects with a 'name'")
    return [o["name"] for o in outputs]


def encode_outputs(arrays: dict[str, Any]) -> list[dict[str, Any]]:
    import numpy as np

    out = []
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        kind = str(arr.dtype)
        if arr.dtype.kind in ("U", "S", "O"):
            datatype, data = "BYTES", [x.decode() if isinstance(x, bytes) else str(x) for x in arr.reshape(-1).tolist()]
        else:
            datatype, data = NUMPY_TO_V2.get(kind, "FP64"), arr.reshape(-1).tolist()
        out.append({"name": name, "shape": list(arr.shape), "datatype": datatype, "data": data})
    return out
