"""Encoding and decoding of V2 (Open Inference Protocol) tensors.

Requests are validated strictly (datatype known, shape non-negative, JSON element types match the
datatype, element count matches the shape) so a bad request gets a 400 naming the input, never a 500
from deep inside a model. numpy is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

V2_TO_NUMPY = {
    "BOOL": "bool",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}
NUMPY_TO_V2 = {v: k for k, v in V2_TO_NUMPY.items()}


class BadRequest(ValueError):
    """The client sent something the protocol does not allow: HTTP 400."""


def _flatten(data: Any) -> list[Any]:
    """Row-major flattening of nested JSON lists (the protocol allows flat or nested `data`)."""
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    stack = [iter(data)]
    while stack:  # iterative, so a deeply nested body cannot hit the recursion limit
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _json_kinds(datatype: str) -> tuple[str, str]:
    """numpy kinds a JSON list may infer to for `datatype`, and words for the error message."""
    if datatype == "BOOL":
        return "b", "true/false"
    if datatype.startswith(("INT", "UINT")):
        return "iu", "integers"
    if datatype.startswith("FP"):
        return "iuf", "numbers"
    return "U", "strings"


_FITS = {
    "BOOL": lambda x: isinstance(x, bool),
    "BYTES": lambda x: isinstance(x, str),
    "INT": lambda x: isinstance(x, int) and not isinstance(x, bool),
    "FP": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
}


def _misfits(flat: list[Any], datatype: str) -> list[Any]:
    """The first element of the wrong JSON type, if any (slow path: only when numpy's guess disagrees,
    e.g. integers spanning int64 and uint64, which numpy infers as float or object)."""
    fits = _FITS["INT" if datatype.startswith(("INT", "UINT")) else "FP" if datatype.startswith("FP") else datatype]
    for x in flat:
        if not fits(x):
            return [x]
    return []


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo `Content-Encoding: gzip|deflate` (tritonclient's request_compression_algorithm), bounded by `limit`."""
    enc = (encoding or "identity").strip().lower()
    if enc == "identity":
        return body
    if enc not in ("gzip", "deflate"):
        raise BadRequest(f"unsupported Content-Encoding {encoding!r} (supported: gzip, deflate)")
    d = zlib.decompressobj(wbits=31 if enc == "gzip" else 15)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"request body is not valid {enc} data: {exc}") from None
    if len(out) > limit:
        raise BadRequest(f"decompressed request body is larger than {limit} bytes")
    return out


def split_binary(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """Separate the JSON header from appended binary tensor data (the binary-data extension)."""
    n = len(body)
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise BadRequest(f"Inference-Header-Content-Length {header_length!r} is not a number") from None
        if n < 0 or n > len(body):
            raise BadRequest(f"Inference-Header-Content-Length {n} does not fit a body of {len(body)} bytes")
    try:
        return json.loads(body[:n]), body[n:]
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("request body is not valid JSON: nested too deeply") from None


def decode_inputs(request: Any, binary: bytes = b"") -> dict[str, Any]:
    """V2 request `inputs` -> {name: numpy array of the given shape and datatype}."""
    import numpy as np

    if not isinstance(request, dict):
        raise BadRequest("request body must be a JSON object")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("request needs a non-empty 'inputs' list")
    if "parameters" in request and not isinstance(request["parameters"], (dict, type(None))):
        raise BadRequest("request 'parameters' must be an object")
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
        if name in out:
            raise BadRequest(f"input {name!r} is given twice")
        if not isinstance(dtype, str) or dtype not in V2_TO_NUMPY:
            raise BadRequest(f"input {name!r}: datatype {dtype!r} is not one of {', '.join(V2_TO_NUMPY)}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers, got {json.dumps(shape)}")
        count = 1
        for d in shape:
            count *= d
        params = tensor.get("parameters")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise BadRequest(f"input {name!r}: 'parameters' must be an object")
        if "binary_data_size" in params:
            size = params["binary_data_size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadRequest(f"input {name!r}: binary_data_size must be a non-negative integer")
            if dtype == "BYTES":
                raise BadRequest(f"input {name!r}: binary BYTES tensors are not supported; send JSON data")
            chunk = binary[offset : offset + size]
            offset += size
            if len(chunk) != size:
                raise BadRequest(f"input {name!r}: binary data is shorter than binary_data_size {size}")
            itemsize = np.dtype(V2_TO_NUMPY[dtype]).itemsize
            if size != count * itemsize:
                raise BadRequest(
                    f"input {name!r}: shape {shape} needs {count} elements "
                    f"({count * itemsize} bytes of {dtype}), got {size} bytes"
                )
            arr = np.frombuffer(chunk, dtype=np.dtype(V2_TO_NUMPY[dtype]).newbyteorder("<"))
        else:
            if "data" not in tensor:
                raise BadRequest(f"input {name!r} has no 'data' (and no binary_data_size)")
            flat = _flatten(tensor["data"])
            if len(flat) != count:
                raise BadRequest(f"input {name!r}: shape {shape} needs {count} elements, got {len(flat)}")
            kinds, words = _json_kinds(dtype)
            if flat and np.asarray(flat).dtype.kind not in kinds:
                misfit = _misfits(flat, dtype)
                if misfit:
                    raise BadRequest(
                        f"input {name!r}: data does not fit datatype {dtype}: expected {words}, "
                        f"got {json.dumps(misfit[0])}"
                    )
            try:
                arr = np.asarray(flat, dtype=V2_TO_NUMPY[dtype])
            except (TypeError, ValueError, OverflowError) as exc:
                raise BadRequest(f"input {name!r}: data does not fit datatype {dtype}: {exc}") from None
        out[name] = arr.reshape(shape)
    return out


def requested_outputs(request: dict[str, Any]) -> list[str] | None:
    """Names from the request's `outputs` (None: the model's default). Their `parameters`
    (tritonclient's binary_data) are accepted and ignored: outputs always come back as JSON."""
    outputs = request.get("outputs")
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise BadRequest("'outputs' must be a list of objects with a 'name'")
    names = [o["name"] for o in outputs]
    if len(set(names)) != len(names):
        raise BadRequest("'outputs' names an output twice")
    return names


def encode_outputs(arrays: dict[str, Any]) -> list[dict[str, Any]]:
    """{name: array} -> V2 response tensors with flat, row-major JSON data."""
    import numpy as np

    out = []
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.dtype.kind in ("U", "S", "O"):
            datatype = "BYTES"
            data: list[Any] = [
                x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in arr.reshape(-1).tolist()
            ]
        else:
            datatype = NUMPY_TO_V2.get(str(arr.dtype), "FP64")
            if datatype == "FP64" and arr.dtype != np.float64:
                arr = arr.astype(np.float64)  # e.g. float128: say FP64 and send FP64
            data = arr.reshape(-1).tolist()
        out.append({"name": name, "shape": list(arr.shape), "datatype": datatype, "data": data})
    return out
