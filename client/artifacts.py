"""Checkpoint and artifact files: atomic writes, hashes, and the formats each kind is stored in.

- Checkpoints: ``torch.save`` when torch is already imported by the trainer and the object is torch state
  (a module -> its ``state_dict()``, a tensor, or a dict/list holding tensors), file suffix ``.pt``; anything
  else is pickled with protocol 5, suffix ``.pkl`` (load with ``pickle.load``). Written to a temporary file in
  the same directory, fsynced, then renamed, so a crash never leaves a half-written checkpoint under its name.
- Images: PNG (PIL image, numpy ``HxW`` / ``HxWxC`` uint8 or float in [0, 1] (clipped), CHW torch tensors,
  matplotlib figures, or a path to any image file PIL can read).
- Histograms: JSON ``{bins (edges), counts, count, min, max, mean, nonfinite}``; NaN/Inf are counted, not binned.
- Graphs: JSON module tree ``{name, type, parameters, trainable_parameters, input_shapes, output_shapes,
  children}`` (shapes when an ``input_sample`` is given), plus an ONNX file when ``onnx`` is installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any, BinaryIO

from trainmon.common.files import WrittenFile, check_name, write_atomic


def safe_name(name: str, what: str = "name") -> str:
    """`name` when usable as one plain file name (`trainmon.common.files.check_name`); ValueError otherwise."""
    return check_name(name, what)


# --- checkpoints ---


def _torch() -> Any:
    """The torch module when the trainer already imported it (never imports torch itself)."""
    return sys.modules.get("torch")


def is_torch_state(obj: Any) -> bool:
    torch = _torch()
    if torch is None:
        return False
    if isinstance(obj, (torch.Tensor, torch.nn.Module)):
        return True
    if isinstance(obj, dict):
        return any(is_torch_state(value) for value in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(is_torch_state(value) for value in obj)
    return hasattr(obj, "state_dict") and callable(obj.state_dict) and type(obj).__module__.startswith("torch")


def write_checkpoint(state: Any, directory: Path, name: str, step: int | None, epoch: int | None) -> WrittenFile:
    """Write one checkpoint file atomically (format: see the module docstring)."""
    safe_name(name, "checkpoint name")
    torch = _torch()
    use_torch = is_torch_state(state)
    if use_torch and isinstance(state, torch.nn.Module):
        state = state.state_dict()
    suffix = ".pt" if use_torch else ".pkl"
    label = f"step{step:09d}" if step is not None else f"epoch{epoch:05d}" if epoch is not None else None
    stem = f"{name}-{label}" if label else f"{name}-{_next_index(directory, name):06d}"
    if use_torch:
        def write(file: BinaryIO) -> None:
            torch.save(state, file)
    else:
        def write(file: BinaryIO) -> None:
            pickle.dump(state, file, protocol=5)
    return write_atomic(directory / f"{stem}{suffix}", write)


def _next_index(directory: Path, name: str) -> int:
    return len(list(directory.glob(f"{name}-*"))) + 1 if directory.exists() else 1


def prune_checkpoints(directory: Path, name: str, keep_last: int, keep: Path) -> list[Path]:
    """Delete all but the ``keep_last`` newest ``name-*`` checkpoint files (never ``keep``); return the deleted."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    files = [path for path in directory.glob(f"{name}-*") if path.suffix in (".pt", ".pkl") and path.is_file()]
    files.sort(key=lambda path: (path.stat().st_mtime_ns, path.name))
    doomed = [path for path in files[:-keep_last] if path != keep]
    for path in doomed:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return doomed


# --- images ---


def image_png(image: Any) -> bytes:
    """PNG bytes of a PIL image, numpy array, torch tensor, matplotlib figure, or image file path."""
    from PIL import Image  # noqa: PLC0415 - pillow only needed when images are logged

    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as opened:
            return _png(opened)
    if isinstance(image, Image.Image):
        return _png(image)
    if hasattr(image, "savefig"):  # matplotlib figure
        buffer = io.BytesIO()
        image.savefig(buffer, format="png")
        return buffer.getvalue()
    return _png(Image.fromarray(_image_array(image)))


def _image_array(image: Any) -> Any:
    import numpy as np  # noqa: PLC0415

    if hasattr(image, "detach"):  # torch tensor, CHW -> HWC
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
            image = np.transpose(image, (1, 2, 0))
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"an image array must be HxW, HxWx3 or HxWx4, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.bool_):
        return (np.clip(np.nan_to_num(array.astype(np.float64)), 0.0, 1.0) * 255).round().astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return np.clip(array, 0, 255).astype(np.uint8)
    raise ValueError(f"unsupported image dtype {array.dtype}")


def _png(image: Any) -> bytes:
    if image.mode not in ("1", "L", "LA", "RGB", "RGBA", "I", "P"):
        image = image.convert("RGBA")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# --- histograms ---


def histogram(values: Any, bins: int = 64) -> dict[str, Any]:
    """Bins (edges) and counts of the finite ``values`` (numpy array-like or torch tensor)."""
    import numpy as np  # noqa: PLC0415

    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    if hasattr(values, "detach"):
        values = values.detach().cpu().float().numpy()
    array = np.asarray(values, dtype=np.float64).ravel()
    finite = array[np.isfinite(array)]
    if finite.size:
        counts, edges = np.histogram(finite, bins=bins)
    else:
        counts, edges = np.zeros(bins, dtype=int), np.linspace(0.0, 1.0, bins + 1)
    return {
        "bins": [float(edge) for edge in edges],
        "counts": [int(count) for count in counts],
        "count": int(finite.size),
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
        "mean": float(finite.mean()) if finite.size else None,
        "nonfinite": int(array.size - finite.size),
    }


# --- graphs ---


def module_graph(model: Any, input_sample: Any = None) -> dict[str, Any]:
    """The module tree of a torch module with parameter counts, and shapes when ``input_sample`` is given."""
    torch = _torch()
    if torch is None or not isinstance(model, torch.nn.Module):
        raise TypeError(f"log_graph needs a torch.nn.Module, got {type(model).__name__}")
    shapes: dict[int, tuple[list, list]] = {}
    handles = []
    if input_sample is not None:
        for module in model.modules():
            handles.append(module.register_forward_hook(
                lambda module, inputs, output: shapes.__setitem__(id(module), (_shapes(inputs), _shapes(output)))))
        try:
            with torch.no_grad():
                model(*input_sample) if isinstance(input_sample, tuple) else model(input_sample)
        finally:
            for handle in handles:
                handle.remove()

    def node(name: str, module: Any) -> dict[str, Any]:
        inputs, outputs = shapes.get(id(module), (None, None))
        return {
            "name": name, "type": type(module).__name__,
            "parameters": sum(p.numel() for p in module.parameters()),
            "trainable_parameters": sum(p.numel() for p in module.parameters() if p.requires_grad),
            "own_parameters": sum(p.numel() for p in module.parameters(recurse=False)),
            "input_shapes": inputs, "output_shapes": outputs,
            "children": [node(child_name, child) for child_name, child in module.named_children()],
        }

    return node(type(model).__name__, model)


def _shapes(value: Any) -> list:
    if hasattr(value, "shape"):
        return [list(value.shape)]
    if isinstance(value, (list, tuple)):
        return [shape for item in value for shape in _shapes(item)]
    if isinstance(value, dict):
        return [shape for item in value.values() for shape in _shapes(item)]
    return []


def onnx_export(model: Any, input_sample: Any, path: Path) -> WrittenFile | None:
    """An ONNX file of ``model`` when ``onnx`` is installed and an input sample is given; else None."""
    if input_sample is None:
        return None
    try:
        import onnx  # noqa: F401, PLC0415
    except ImportError:
        return None
    torch = _torch()
    args = input_sample if isinstance(input_sample, tuple) else (input_sample,)
    # torch's default (torch.export-based) exporter needs onnxscript; without it, the TorchScript-based one.
    options = {} if importlib.util.find_spec("onnxscript") else {"dynamo": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return write_atomic(path, lambda file: torch.onnx.export(model, args, file, **options))


def json_bytes(data: Any) -> bytes:
    return json.dumps(data, allow_nan=False, default=str).encode()
