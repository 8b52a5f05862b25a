"""Encoding and decoding of V2 (Open Inference Protocol) tensors.

Requests are validated strictly (datatype known, shape non-negative, JSON element types match the
datatype, element count matches the shape) so a bad request gets a 400 naming the input, never a 500
from deep inside a model. numpy is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

# Each dimension and each tensor's element count is checked against these before anything is allocated.
MAX_DIM = 2**31 - 1
DEFAULT_MAX_ELEMENTS = 16 * 1024 * 1024

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


def _flatten(data: Any, shape: list[int], name: str) -> list[Any]:
    """Row-major flattening of `data`: flat, or nested exactly as `shape` says (one list level per
    dimension, each of that dimension's length). A ragged nesting is a 400, not a silent reshape."""
    if not isinstance(data, list):
        return [data]
    if not data or not isinstance(data[0], list):
        return data  # flat, the common case (a list nested further in fails numpy's conversion: a 400)
    out: list[Any] = []
    stack = [(iter(data), 0)]
    if len(data) != (shape[0] if shape else -1):
        raise BadRequest(f"input {name!r}: nested data does not match shape {shape}")
    while stack:  # iterative, so a deeply nested body cannot hit the recursion limit
        items, depth = stack[-1]
        for item in items:
            inner = depth + 1
            if isinstance(item, list):
                if inner >= len(shape) or len(item) != shape[inner]:
                    raise BadRequest(f"input {name!r}: nested data does not match shape {shape}")
                stack.append((iter(item), inner))
                break
            if inner != len(shape):
                raise BadRequest(f"input {name!r}: nested data does not match shape {shape}")
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


def _json_tensor(flat: list[Any], dtype: str, name: str) -> Any:
    """A JSON element list as a numpy array of `dtype`, with every element of the JSON type the datatype
    takes (a string in an FP64 tensor is a 400, not numpy's silent cast) and in its range."""
    import numpy as np

    kinds, words = _json_kinds(dtype)
    target = np.dtype(V2_TO_NUMPY[dtype])
    try:
        raw = np.asarray(flat)  # numpy's own guess says whether the JSON types fit, in one pass
    except (TypeError, ValueError, OverflowError):
        raw = None  # e.g. a list nested inside a flat one, or integers past 64 bits
    if raw is None or (flat and raw.dtype.kind not in kinds):
        misfit = _misfits(flat, dtype)
        if misfit:
            raise BadRequest(
                f"input {name!r}: data does not fit datatype {dtype}: expected {words}, got {json.dumps(misfit[0])}"
            )
        raw = None  # the types fit, numpy just guessed otherwise (integers spanning int64 and uint64)
    try:
        with np.errstate(over="raise"):
            if raw is not None and target.kind in "fb":
                arr = raw.astype(target, copy=False)
            else:  # integers: converting from the list checks each value's range for the target
                arr = np.asarray(flat, dtype=target)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadRequest(f"input {name!r}: data does not fit datatype {dtype}: {exc}") from None
    except FloatingPointError:
        raise BadRequest(f"input {name!r}: data does not fit datatype {dtype}: a value is out of its range") from None
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():  # JSON has no inf or NaN: it came from overflow
        raise BadRequest(f"input {name!r}: data does not fit datatype {dtype}: a value is out of its range")
    return arr


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
    import orjson

    n = len(body)
    if header_length is not None:
        text = header_length.strip()
        if not text.isascii() or not text.isdigit() or len(text) > 19:
            raise BadRequest(f"Inference-Header-Content-Length {header_length[:40]!r} is not a number")
        n = int(text)
        if n > len(body):
            raise BadRequest(f"Inference-Header-Content-Length {n} does not fit a body of {len(body)} bytes")
    try:
        request = orjson.loads(memoryview(body)[:n] if n != len(body) else body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise BadRequest("request body must be a JSON object")
    return request, body[n:]


def decode_bytes_tensor(chunk: bytes, count: int, name: str) -> list[bytes]:
    """Binary BYTES elements: each a 4-byte little-endian length, then that many bytes."""
    out: list[bytes] = []
    pos, end = 0, len(chunk)
    for _ in range(count):
        if pos + 4 > end:
            raise BadRequest(f"input {name!r}: binary BYTES data ends inside an element's length")
        (size,) = struct.unpack_from("<I", chunk, pos)
        pos += 4
        if pos + size > end:
            raise BadRequest(f"input {name!r}: binary BYTES element of {size} bytes runs past the data")
        out.append(bytes(chunk[pos : pos + size]))
        pos += size
    if pos != end:
        raise BadRequest(f"input {name!r}: {end - pos} bytes of binary BYTES data left over after {count} elements")
    return out


def decode_inputs(request: Any, binary: bytes = b"", max_elements: int = DEFAULT_MAX_ELEMENTS) -> dict[str, Any]:
    """V2 request `inputs` -> {name: numpy array of the given shape and datatype}.

    Every shape is checked against `max_elements` before anything is allocated, so a declared
    `[1000000000, 64]` is a 400, not an attempt to build the tensor."""
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
        if not isinstance(dtype, str) or (dtype not in V2_TO_NUMPY and dtype != "BF16"):
            raise BadRequest(f"input {name!r}: datatype {dtype!r} is not one of {', '.join(V2_TO_NUMPY)}, BF16")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers, got {json.dumps(shape)}")
        if len(shape) > 32 or any(d > MAX_DIM for d in shape):
            raise BadRequest(f"input {name!r}: shape {json.dumps(shape)[:200]} is too large")
        count = 1
        for d in shape:
            count *= d
        if count > max_elements:
            raise BadRequest(
                f"input {name!r}: shape {shape} has {count} elements; this server takes at most {max_elements}"
            )
        params = tensor.get("parameters")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise BadRequest(f"input {name!r}: 'parameters' must be an object")
        if "binary_data_size" in params:
            size = params["binary_data_size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadRequest(f"input {name!r}: binary_data_size must be a non-negative integer")
            chunk = binary[offset : offset + size]
            offset += size
            if len(chunk) != size:
                raise BadRequest(f"input {name!r}: binary data is shorter than binary_data_size {size}")
            if dtype == "BYTES":
                out[name] = np.array(decode_bytes_tensor(chunk, count, name) or [], dtype=object).reshape(shape)
                continue
            if dtype == "BF16":  # numpy has no bfloat16: widen the 2-byte values to float32, which is exact
                if size != count * 2:
                    raise BadRequest(f"input {name!r}: shape {shape} needs {count * 2} bytes of BF16, got {size} bytes")
                out[name] = (np.frombuffer(chunk, "<u2").astype("<u4") << 16).view("<f4").reshape(shape)
                continue
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
            flat = _flatten(tensor["data"], shape, name)
            if len(flat) != count:
                raise BadRequest(f"input {name!r}: shape {shape} needs {count} elements, got {len(flat)}")
            arr = _json_tensor(flat, "FP32" if dtype == "BF16" else dtype, name)
        out[name] = arr.reshape(shape)
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data follow the inputs that no input claims")
    return out


def requested_outputs(request: dict[str, Any]) -> list[str] | None:
    """Names from the request's `outputs` (None: the model's default); see binary_outputs for their
    `parameters`."""
    outputs = request.get("outputs")
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise BadRequest("'outputs' must be a list of objects with a 'name'")
    if any(not isinstance(o.get("parameters", {}), dict) for o in outputs):
        raise BadRequest("an output's 'parameters' must be an object")
    names = [o["name"] for o in outputs]
    if len(set(names)) != len(names):
        raise BadRequest("'outputs' names an output twice")
    return names


_DTYPE_TO_V2: dict[Any, str] = {}


def _v2_datatype(dtype: Any) -> str:
    """The V2 datatype of a numpy dtype ("" for one V2 has not), cached by dtype (`dtype.name` is slow)."""
    found = _DTYPE_TO_V2.get(dtype)
    if found is None:
        found = _DTYPE_TO_V2[dtype] = "" if dtype.kind == "O" else NUMPY_TO_V2.get(dtype.name, "")
    return found


def _as_bytes(x: Any) -> bytes:
    return x if isinstance(x, bytes) else str(x).encode()


def encode_outputs(arrays: dict[str, Any], binary: frozenset[str] | bool = False) -> tuple[list[dict[str, Any]], bytes]:
    """{name: array} -> V2 response tensors and the binary data appended after the JSON.

    Outputs named in `binary` (or all, for True) go out in the binary-data extension: raw little-endian
    bytes, or for BYTES each element as a 4-byte length and its bytes. The others carry flat, row-major
    `data`; numeric arrays are left as numpy for orjson to write directly (OPT_SERIALIZE_NUMPY)."""
    import numpy as np

    out: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, value in arrays.items():
        arr = np.asarray(value)
        if arr.dtype.kind in ("U", "S", "O"):
            datatype = "BYTES"
        else:
            datatype = _v2_datatype(arr.dtype)
            if not datatype:  # e.g. float128: say FP64 and send FP64
                arr, datatype = arr.astype(np.float64), "FP64"
        tensor: dict[str, Any] = {"name": name, "shape": list(arr.shape), "datatype": datatype}
        flat = arr.reshape(-1)
        if binary is True or (binary and name in binary):
            if datatype == "BYTES":
                raw = b"".join(struct.pack("<I", len(b)) + b for b in map(_as_bytes, flat.tolist()))
            else:
                raw = np.ascontiguousarray(flat, dtype=arr.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif datatype == "BYTES":
            tensor["data"] = [x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in flat.tolist()]
        else:  # every numeric dtype V2 names, orjson writes straight from the (native-order) array
            if arr.dtype.kind == "f" and not np.isfinite(flat).all():
                raise BadRequest(
                    f"output {name!r} holds NaN or infinite values, which JSON cannot carry: "
                    "ask for it as binary data (outputs: [{name, parameters: {binary_data: true}}])"
                )
            tensor["data"] = np.ascontiguousarray(flat, dtype=flat.dtype.newbyteorder("="))
        out.append(tensor)
    return out, b"".join(chunks)


def binary_outputs(request: dict[str, Any]) -> frozenset[str] | bool:
    """Which outputs the client wants as binary data: all (`binary_data_output` request parameter), or
    those whose own parameters say `binary_data: true` (tritonclient's default for requested outputs)."""
    params = request.get("parameters")
    if isinstance(params, dict) and params.get("binary_data_output") is True:
        return True
    named = frozenset(
        o["name"]
        for o in request.get("outputs") or ()
        if isinstance(o, dict) and isinstance(o.get("parameters"), dict) and o["parameters"].get("binary_data") is True
    )
    return named or False
