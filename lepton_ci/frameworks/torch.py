"""PyTorch models: save for serving, load for serving, pick a device, log metrics, keep the best checkpoint.

Why these formats: a `torch.save`-d module is a pickle that imports and runs the training code (and
anything else) on load. `torch.export` (`.pt2`) stores the traced graph as data (JSON plus raw weights),
so the server needs neither the training code nor pickle; the batch axis is exported as a dynamic
dimension so one program serves any batch size. Models `torch.export` cannot capture fall back to
TorchScript (also a graph, run by TorchScript's interpreter, not pickle). The weights are also written
as safetensors beside the model, for fine-tuning or inspection without loading any code.

The V2 description (names, datatypes, shapes with -1 for the batch axis) is measured from example
inputs at save time and stored inside the archive (an extra file, `lepton.json`), so the server
reports exactly what the model takes. torch is imported inside functions: importing this module costs
nothing until a model is saved or loaded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lepton_ci.errors import UserError
from lepton_ci.frameworks import _formats
from lepton_ci.frameworks._tensors import check_inputs, example_request_for
from lepton_ci.frameworks.tracker import Tracker, default_tracker

SPEC_FILE = "lepton.json"
EXPECTED = "a torch.export (.pt2) or TorchScript archive"


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise _formats.missing("PyTorch", "torch", "torch") from None
    return torch


def device(requested: str | None = None) -> Any:
    """The torch.device to use: `requested`, else $LEPTON_CI_DEVICE, else CUDA when present, else CPU.
    Asking for CUDA on a machine without a GPU is a UserError, not a silent fall back to the CPU."""
    torch = _torch()
    wanted = _formats.requested_device(requested)
    has_cuda = torch.cuda.is_available()
    if wanted == "auto":
        return torch.device("cuda" if has_cuda else "cpu")
    if wanted.startswith("cuda"):
        if not has_cuda:
            raise _formats.no_gpu(wanted, "PyTorch", f"torch {torch.__version__}, torch.cuda.is_available() is False")
        index = int(wanted.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise _formats.no_gpu(wanted, "PyTorch", f"only {torch.cuda.device_count()} GPU(s) visible")
    return torch.device(wanted)


_device = device  # the loaders' `device` parameter shadows the function


# -- saving ---------------------------------------------------------------------------------------------------


def _as_tuple(example_inputs: Any) -> tuple[Any, ...]:
    return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


def _outputs_list(result: Any) -> list[Any]:
    """A forward's result as a list of tensors, in order (a dict in its key order)."""
    if isinstance(result, dict):
        return list(result.values())
    if isinstance(result, (tuple, list)):
        return list(result)
    return [result]


def _tensor_spec(name: str, tensor: Any) -> dict[str, Any]:
    dtype = str(tensor.dtype).removeprefix("torch.")
    if dtype not in _formats.TORCH_TO_V2:
        raise UserError(f"tensor {name!r} has dtype {dtype}, which V2 cannot carry")
    if tensor.dim() == 0:
        raise UserError(f"tensor {name!r} is a scalar: serving needs a batch axis first")
    return {"name": name, "datatype": _formats.TORCH_TO_V2[dtype], "shape": [-1, *tensor.shape[1:]]}


def spec_for(
    model: Any, example_inputs: Any, input_names: Sequence[str] | None, output_names: Sequence[str] | None
) -> dict[str, Any]:
    """The V2 description of `model`, measured by running it once on `example_inputs`."""
    torch = _torch()
    args = _as_tuple(example_inputs)
    in_names = list(input_names or [f"input-{i}" for i in range(len(args))])
    if len(in_names) != len(args):
        raise UserError(f"{len(in_names)} input names for {len(args)} example inputs")
    with torch.no_grad():
        result = model(*args)
    outs = _outputs_list(result)
    default_out = list(result) if isinstance(result, dict) else [f"output-{i}" for i in range(len(outs))]
    out_names = list(output_names or default_out)
    if len(out_names) != len(outs):
        raise UserError(f"{len(out_names)} output names for {len(outs)} model outputs")
    return {
        "inputs": [_tensor_spec(n, t) for n, t in zip(in_names, args, strict=True)],
        "outputs": [_tensor_spec(n, t) for n, t in zip(out_names, outs, strict=True)],
    }


def save(
    model: Any,
    path: str | Path,
    example_inputs: Any,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    weights: bool = True,
) -> Path:
    """Save `model` for serving: torch.export with a dynamic batch axis, else TorchScript (same path; the
    loader tells them apart). `example_inputs`: a tensor or a tuple of tensors with a batch of at least 2.
    With `weights`, the state dict is also written as safetensors (PATH with the suffix .safetensors)."""
    torch = _torch()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    args = _as_tuple(example_inputs)
    if any(getattr(a, "dim", lambda: 0)() == 0 or a.shape[0] < 2 for a in args):
        raise UserError("example_inputs need a batch axis first with at least 2 rows (batch 0 and 1 are special)")
    was_training = model.training
    model.eval()
    try:
        spec = spec_for(model, args, input_names, output_names)
        batch = torch.export.Dim("batch")
        try:
            program = torch.export.export(model, args, dynamic_shapes=tuple({0: batch} for _ in args))
            spec["format"] = "torch-export"
            torch.export.save(program, target, extra_files={SPEC_FILE: json.dumps(spec)})
        except Exception as exc:  # noqa: BLE001 - export refuses many Python constructs; TorchScript may not
            spec["format"] = "torchscript"
            spec["export_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            scripted = _torchscript(model, args)
            torch.jit.save(scripted, str(target), _extra_files={SPEC_FILE: json.dumps(spec)})
        if weights:
            save_weights(model, target.with_suffix(".safetensors"))
    finally:
        model.train(was_training)
    return target


def _torchscript(model: Any, args: tuple[Any, ...]) -> Any:
    torch = _torch()
    try:
        return torch.jit.script(model)
    except Exception:  # noqa: BLE001 - scripting needs type-annotated code; tracing takes what ran
        try:
            return torch.jit.trace(model, args)
        except Exception as exc:  # noqa: BLE001
            raise UserError(
                f"cannot save {type(model).__name__}: neither torch.export nor TorchScript can capture it ({exc})"
            ) from None


def save_weights(model: Any, path: str | Path) -> Path:
    """The state dict as safetensors (tensors only: nothing in it can run code when read back)."""
    from safetensors.torch import save_file

    target = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(target))
    return target


# -- loading and serving --------------------------------------------------------------------------------------


class TorchModel:
    """A loaded .pt2 or TorchScript program behind the `LoadedModel` interface."""

    # Exported with a dynamic first axis and run in eval mode: rows are independent (the batching
    # contract in lepton_ci/serve/batcher.py). Not marked thread-safe: one forward at a time.
    supports_batching = True
    thread_safe = False

    def __init__(self, module: Any, spec: dict[str, Any], device: Any) -> None:
        import numpy as np

        torch = _torch()
        self.module = module
        self.spec = spec
        self.device = device
        self.inputs = spec["inputs"]
        self.outputs = spec["outputs"]
        self.output_names = [o["name"] for o in self.outputs]
        self._torch_dtypes = [getattr(torch, _formats.V2_TO_TORCH[i["datatype"]]) for i in self.inputs]
        self._wire_dtypes = [np.dtype(_wire_numpy(_formats.V2_TO_TORCH[i["datatype"]])) for i in self.inputs]

    def metadata(self) -> dict[str, Any]:
        def v2(tensors: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{**t, "datatype": _formats.wire_datatype(t["datatype"])} for t in tensors]

        return {
            "platform": "pytorch_" + self.spec.get("format", "torch-export"),
            "inputs": v2(self.inputs),
            "outputs": v2(self.outputs),
        }

    def predict(self, inputs: dict[str, Any], outputs: list[str] | None) -> dict[str, Any]:
        """Named numpy arrays in and out; ValueError (a 400) for inputs that do not fit the saved model."""
        import numpy as np

        torch = _torch()
        wanted = outputs or self.output_names
        for name in wanted:
            if name not in self.output_names:
                raise ValueError(f"unknown output {name!r} (available: {', '.join(self.output_names)})")
        arrays = check_inputs(inputs, self.inputs, self._wire_dtypes)
        rows = arrays[0].shape[0]
        if rows == 0:
            return {
                o["name"]: np.zeros([0, *o["shape"][1:]], dtype=_wire_numpy(_formats.V2_TO_TORCH[o["datatype"]]))
                for o in self.outputs
                if o["name"] in wanted
            }
        tensors = [
            torch.from_numpy(a).to(device=self.device, dtype=dt)
            for a, dt in zip(arrays, self._torch_dtypes, strict=True)
        ]
        with torch.inference_mode():
            result = _outputs_list(self.module(*tensors))
        out: dict[str, Any] = {}
        for name, tensor in zip(self.output_names, result, strict=True):
            if name in wanted:
                t = tensor.detach()
                if t.dtype == torch.bfloat16:
                    t = t.float()
                out[name] = t.cpu().numpy()
        return out

    def example_request(self) -> dict[str, Any]:
        return example_request_for(self.inputs)


def _wire_numpy(torch_dtype: str) -> str:
    return "float32" if torch_dtype == "bfloat16" else torch_dtype


def _spec_from_program(program: Any) -> dict[str, Any]:
    """Names, datatypes and shapes from an exported program's graph (for .pt2 files saved without
    lepton-ci): symbolic dimensions are reported as -1."""
    sig = program.graph_signature
    nodes = {n.name: n for n in program.graph.nodes}

    def describe(name: str, value: Any) -> dict[str, Any]:
        dtype = str(value.dtype).removeprefix("torch.")
        shape = [d if isinstance(d, int) else -1 for d in value.shape]
        if shape:
            shape[0] = -1
        return {"name": name, "datatype": _formats.TORCH_TO_V2.get(dtype, "FP32"), "shape": shape}

    inputs = [describe(n, nodes[n].meta["val"]) for n in sig.user_inputs]
    out_node = next(n for n in program.graph.nodes if n.op == "output")
    values = [a.meta.get("val") for a in out_node.args[0]][: len(sig.user_outputs)]
    outputs = [describe(f"output-{i}", v) for i, v in enumerate(values)]
    return {"format": "torch-export", "inputs": inputs, "outputs": outputs}


class TorchLoader:
    """Loads a .pt2 (torch.export) or TorchScript archive; refuses pickles and other frameworks' files."""

    def load(self, path: Path, device: str | None = None) -> TorchModel:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"model file not found: {path}")
        found = _formats.sniff(path)
        if found not in ("torch-export", "torchscript"):
            raise _formats.refuse(path, found, "torch", EXPECTED)
        torch = _torch()
        where = _device(device)
        extra = {SPEC_FILE: ""}
        try:
            if found == "torch-export":
                program = torch.export.load(str(path), extra_files=extra)
                module = program.module().to(where)
            else:
                module = torch.jit.load(str(path), map_location=where, _extra_files=extra)
                module.eval()
        except Exception as exc:  # noqa: BLE001 - a damaged archive fails in many ways
            raise UserError(f"cannot load the PyTorch model {path}: {type(exc).__name__}: {str(exc)[:300]}") from None
        try:
            spec = json.loads(extra[SPEC_FILE]) if extra[SPEC_FILE] else None
        except ValueError:
            raise UserError(f"{path}: its {SPEC_FILE} is not valid JSON") from None
        if spec is None:
            if found != "torch-export":
                raise UserError(
                    f"{path} is a TorchScript archive without lepton-ci's {SPEC_FILE} (input names, datatypes, "
                    "shapes): save it with lepton_ci.frameworks.torch.save"
                )
            spec = _spec_from_program(program)
        _check_spec(spec, path)
        return TorchModel(module, spec, where)


def _check_spec(spec: Any, path: Path) -> None:
    """The stored description must be what `save` writes: a damaged one is a UserError, not a KeyError."""
    ok = isinstance(spec, dict) and all(isinstance(spec.get(k), list) and spec[k] for k in ("inputs", "outputs"))
    for tensor in (spec.get("inputs", []) + spec.get("outputs", [])) if ok else []:
        ok = ok and (
            isinstance(tensor, dict)
            and isinstance(tensor.get("name"), str)
            and tensor.get("datatype") in _formats.V2_TO_TORCH
            and isinstance(tensor.get("shape"), list)
            and len(tensor["shape"]) >= 1
            and all(isinstance(d, int) and d >= -1 for d in tensor["shape"])
        )
    if not ok:
        raise UserError(f"{path}: its {SPEC_FILE} does not describe the model's inputs and outputs")


def load(path: str | Path, device: str | None = None) -> TorchModel:
    """Load a saved model for inference (what the server does), e.g. to check it after training."""
    return TorchLoader().load(Path(path), device)


# -- training helpers -----------------------------------------------------------------------------------------


def log_metrics(metrics: dict[str, Any], step: int | None = None, tracker: Tracker | None = None) -> None:
    """Log metrics from a training loop; tensors and numpy scalars are fine (`.item()` is taken). Buffered:
    cheap enough for every step, written into the run directory every few seconds and at exit."""
    (tracker or default_tracker()).log_metrics(metrics, step)


class BestCheckpoint:
    """Keeps the best weights seen (by `monitor`), and saves the best model as the artifact at the end.

    `update` copies the state dict when the value improves (cheap); `save` loads the best weights back
    into the model and writes it with `save` above (export once, not every epoch)."""

    def __init__(self, monitor: str = "val.loss", mode: str = "min") -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None
        self.best_step: int | None = None
        self._state: dict[str, Any] | None = None

    def update(self, model: Any, value: Any, step: int | None = None) -> bool:
        """Record `value` of the monitored metric; True when it is the best so far (weights kept)."""
        number = float(value.item() if hasattr(value, "item") else value)
        better = self.best is None or (number < self.best if self.mode == "min" else number > self.best)
        if better:
            self.best, self.best_step = number, step
            self._state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return better

    def save(self, model: Any, path: str | Path, example_inputs: Any, **kwargs: Any) -> Path:
        """Restore the best weights into `model` and save it for serving; logs `best.<monitor>`."""
        if self._state is not None:
            model.load_state_dict(self._state)
            metrics: dict[str, Any] = {f"best.{self.monitor}": self.best}
            if self.best_step is not None:
                metrics["best.step"] = self.best_step
            log_metrics(metrics)
        return save(model, path, example_inputs, **kwargs)
