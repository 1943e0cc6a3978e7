"""Run any bioimage.io model package on image files through bioimageio.core, block by block."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from bmz_cosdd.errors import UserError
from bmz_cosdd.inference.files import read_inputs, write_outputs

WEIGHT_FORMATS = ("torchscript", "pytorch_state_dict", "onnx")


def is_package(path: str | Path) -> bool:
    """True for a file (a zip) rather than a run folder."""
    return Path(path).is_file()


def _spatial_limits(axis) -> tuple[int, int]:
    size = axis.size
    if hasattr(size, "min"):
        return int(size.min), int(size.step)
    return int(size), 0


def predict_files_with_package(
    package: str | Path,
    inputs: Sequence[str | Path],
    axes: str,
    out_dir: str | Path,
    pattern: str = "*",
    weight_format: Optional[str] = None,
    block: int = 512,
    device: Optional[str] = None,
    on_image: Optional[Callable[[Path, int, int], None]] = None,
) -> list[Path]:
    """Denoise image files with a model package; writes ``<stem>_<output id>.tif`` to ``out_dir``.

    Parameters
    ----------
    package
        A bioimage.io model zip (any model with one (b, c, y, x) input).
    inputs, axes, pattern
        Image files or folders and the axes of their arrays.
    weight_format
        ``torchscript``, ``pytorch_state_dict`` or ``onnx`` (default: core's choice).
    block
        Largest block side; larger images are predicted in blocks with the model's halo.
    device
        ``cpu`` or ``cuda`` (default: core's choice).
    """
    from bioimageio.core import Tensor, create_prediction_pipeline, predict

    from bmz_cosdd.export.rdf import read_package_descr

    descr = read_package_descr(package)
    if weight_format is not None:
        if weight_format not in WEIGHT_FORMATS:
            raise UserError(f"unknown weight format {weight_format!r} (choose {', '.join(WEIGHT_FORMATS)})")
        if getattr(descr.weights, weight_format, None) is None:
            present = [f for f in WEIGHT_FORMATS if getattr(descr.weights, f, None) is not None]
            raise UserError(f"the package has no {weight_format} weights (it has {', '.join(present)})")
    if len(descr.inputs) != 1:
        raise UserError(f"the package has {len(descr.inputs)} inputs; only single-input models are supported")
    tensor = descr.inputs[0]
    axis_ids = [str(a.id) for a in tensor.axes]
    by_type = {a.type: a for a in tensor.axes}
    if "space" not in by_type or len([a for a in tensor.axes if a.type == "space"]) != 2:
        raise UserError(f"the package's input axes {axis_ids} are not a 2-D image (b, c, y, x)")
    spatial = [a for a in tensor.axes if a.type == "space"]
    (min_y, step_y), (min_x, step_x) = (_spatial_limits(a) for a in spatial)
    channel_axis = by_type.get("channel")
    n_channels = len(channel_axis.channel_names) if channel_axis is not None else 1

    loaded = read_inputs(inputs, pattern, axes, n_channels)
    for item in loaded:
        y, x = item.samples.shape[-2:]
        if y < min_y or x < min_x:
            raise UserError(
                f"{item.path.name}: the image ({y} x {x}) is smaller than the model's minimum size ({min_y} x {min_x})"
            )
    pipeline = create_prediction_pipeline(descr, weight_format=weight_format, devices=[device] if device else None)
    written: list[Path] = []
    # Not used as a context manager: core 0.11's predict() unloads the model itself and
    # an outer `with pipeline:` then blocks forever on exit.
    for index, item in enumerate(loaded):
        per_output: dict[str, list[np.ndarray]] = {}
        for sample in item.samples.astype(np.float32):
            data = _fit_to_grid(sample, min_y, step_y, min_x, step_x)
            result = predict(
                model=pipeline,
                inputs={tensor.id: Tensor.from_numpy(data[None], dims=tuple(axis_ids))},
                blocksize_parameter=_blocksize(data.shape[-2:], block, (min_y, min_x), (step_y, step_x)),
            )
            for member_id, member in result.members.items():
                value = np.asarray(member.data)[0][..., : sample.shape[-2], : sample.shape[-1]]
                per_output.setdefault(str(member_id), []).append(value)
        written += write_outputs(out_dir, item, per_output)
        if on_image is not None:
            on_image(item.path, index + 1, len(loaded))
    return written


def _blocksize(shape: Sequence[int], block: int, mins: Sequence[int], steps: Sequence[int]) -> Optional[int]:
    """The ParameterizedSize ``n`` of blocks no larger than ``block`` nor the image; None: one piece."""
    if all(size <= block for size in shape):
        return None
    ns = [(min(block, size) - low) // step for size, low, step in zip(shape, mins, steps) if step]
    return max(0, min(ns)) if ns else None


def _fit_to_grid(image: np.ndarray, min_y: int, step_y: int, min_x: int, step_x: int) -> np.ndarray:
    """Reflect-pad (C, Y, X) at the bottom/right to the next size the model accepts."""
    pads = []
    for size, low, step in ((image.shape[-2], min_y, step_y), (image.shape[-1], min_x, step_x)):
        target = size if step == 0 or (size - low) % step == 0 else low + ((size - low) // step + 1) * step
        pads.append((0, target - size))
    if not any(p[1] for p in pads):
        return image
    return np.pad(image, [(0, 0)] + pads, mode="reflect")
