"""What a model file is, before any framework touches it; V2 datatypes; the device to load onto.

Why sniff first: a framework's own loader, handed a file of another framework or a pickle, fails with
an error deep in its internals, or worse, runs the pickle. Reading the first bytes and the zip member
names is enough to tell every format lepton-ci serves apart, so a loader can refuse a file that is not
its own (or is an unsafe pickle where a safe format is expected) in one line, without loading it.

Nothing here imports numpy or a framework: the server imports this before it knows what it will load.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from lepton_ci.errors import UserError

DEVICE_ENV = "LEPTON_CI_DEVICE"

# V2 datatypes and the element types the framework adapters use for them. numpy has no bfloat16, so the
# model server carries a BF16 tensor as FP32 on the wire (see docs/frameworks.md): a BF16 model input
# is advertised as FP32 and cast inside the model, a BF16 output cast to FP32 before it leaves.
V2_DATATYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "BF16",
    "FP32",
    "FP64",
    "BYTES",
)
# torch dtype names (str(torch.float32) without "torch.") <-> V2.
TORCH_TO_V2 = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "bfloat16": "BF16",
    "float32": "FP32",
    "float64": "FP64",
}
V2_TO_TORCH = {v: k for k, v in TORCH_TO_V2.items()}
# Keras dtype names (also TensorFlow's) <-> V2; Keras says "string" where TensorFlow tensors hold bytes.
KERAS_TO_V2 = {**TORCH_TO_V2, "string": "BYTES"}
V2_TO_KERAS = {v: k for k, v in KERAS_TO_V2.items()}
# What the server puts on the wire for a datatype it cannot carry natively.
WIRE_DATATYPE = {"BF16": "FP32"}


def wire_datatype(datatype: str) -> str:
    """The V2 datatype a tensor of `datatype` is sent and received as by lepton-ci's server."""
    return WIRE_DATATYPE.get(datatype, datatype)


# -- file formats ---------------------------------------------------------------------------------------------

PICKLE_OPCODE_PROTO = 0x80
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZLIB_HEADERS = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")  # joblib's default compressed dumps


def sniff(path: Path) -> str:
    """The format of `path`: "torch-export", "torchscript", "torch-pickle", "keras", "skops", "zip",
    "pickle", "hdf5", "safetensors" or "unknown". Reads only the header and the zip directory."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise UserError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    if head.startswith(b"PK"):
        return _sniff_zip(path)
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if head[:1] == bytes([PICKLE_OPCODE_PROTO]) or head[:2] in ZLIB_HEADERS:
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: u64 header length, then a JSON header
        return "safetensors"
    return "unknown"


def _sniff_zip(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "unknown"
    top = set(names)
    # torch archives put every member under one folder named after the file.
    inner = {n.split("/", 1)[1] for n in names if "/" in n}
    if "archive_format" in inner or any(n.startswith("models/") and n.endswith(".json") for n in inner):
        return "torch-export"
    if any(n.startswith("code/") for n in inner) and "constants.pkl" in inner:
        return "torchscript"
    if "data.pkl" in inner:
        return "torch-pickle"
    if {"config.json", "metadata.json"} <= top:
        return "keras"
    if "schema.json" in top:
        return "skops"
    return "zip"


FORMAT_WORDS = {
    "torch-export": "a PyTorch torch.export archive (.pt2)",
    "torchscript": "a TorchScript archive",
    "torch-pickle": "a pickled torch.save file",
    "keras": "a Keras .keras archive",
    "skops": "a skops file (scikit-learn)",
    "zip": "a zip archive of no known model format",
    "pickle": "a pickle/joblib file",
    "hdf5": "an HDF5 file (legacy Keras .h5)",
    "safetensors": "a safetensors weights file (weights only, no model graph)",
    "unknown": "not a model file lepton-ci knows",
}


def refuse(path: Path, found: str, framework: str, expected: str) -> UserError:
    """The one-line error for a file of the wrong kind; pickles are called out as unsafe."""
    why = FORMAT_WORDS.get(found, found)
    if found in ("pickle", "torch-pickle"):
        return UserError(
            f"{path} is {why}, which runs arbitrary code when loaded; the {framework} loader only loads "
            f"{expected} (save the model with lepton_ci.frameworks.{framework}.save)"
        )
    return UserError(f"{path} is {why}, not {expected}: check model.framework and model.file in lepton.yml")


# -- devices --------------------------------------------------------------------------------------------------


def requested_device(device: str | None) -> str:
    """The device asked for: the argument, else $LEPTON_CI_DEVICE, else "auto" (CUDA when present)."""
    value = (device or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    if value == "gpu":
        value = "cuda"
    head, _, index = value.partition(":")
    if head not in ("auto", "cpu", "cuda") or (index and (head != "cuda" or not index.isdigit())):
        source = "--device" if device else f"${DEVICE_ENV}"
        raise UserError(f"{source} {value!r} is not a device (expected auto, cpu, cuda or cuda:N)")
    return value


def no_gpu(device: str, framework: str, detail: str) -> UserError:
    """The one-line refusal of a CUDA request on a machine without a usable GPU."""
    return UserError(
        f"device {device!r} was requested but {framework} sees no GPU on this machine ({detail}); "
        f"use device 'cpu' or 'auto' (${DEVICE_ENV})"
    )


def missing(framework: str, extra: str, module: str) -> UserError:
    """The one-line error for a framework that is not installed, naming the extra that installs it."""
    return UserError(f"{framework} models need {module}, which is not installed: pip install 'lepton-ci[{extra}]'")
