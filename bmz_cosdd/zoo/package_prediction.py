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


class PackagePredictor:
    """A model package loaded once through bioimageio.core, predicting one image at a time.

    Creating it checks the package (see :func:`predict_files_with_package` for what is refused) and loads
    nothing; :meth:`load` (or the first :meth:`predict`) loads its weights once, and each :meth:`predict` then
    costs the network's forward pass and the package's own pre- and post-processing. Close it (or use it in a
    ``with`` block) to free the model.

    Parameters
    ----------
    package, weight_format, device, trust_code
        As for :func:`predict_files_with_package`.

    Attributes
    ----------
    n_channels, spatial_dims
        What an image must have: (C, Y, X) for 2, (C, Z, Y, X) for 3.
    """

    def __init__(self, package: str | Path, weight_format: Optional[str] = None, device: Optional[str] = None,
                 trust_code: bool = False) -> None:
        from bmz_cosdd.artifacts.package_reader import read_package_descr
        from bmz_cosdd.export.package_trust import choose_weight_format

        descr = read_package_descr(package)
        if weight_format is not None:
            if weight_format not in WEIGHT_FORMATS:
                raise UserError(f"unknown weight format {weight_format!r} (choose {', '.join(WEIGHT_FORMATS)})")
            if getattr(descr.weights, weight_format, None) is None:
                present = [f for f in WEIGHT_FORMATS if getattr(descr.weights, f, None) is not None]
                raise UserError(f"the package has no {weight_format} weights (it has {', '.join(present)})")
        weight_format = choose_weight_format(package, weight_format, trust_code)
        if len(descr.inputs) != 1:
            raise UserError(f"the package has {len(descr.inputs)} inputs; only single-input models are supported")
        tensor = descr.inputs[0]
        spatial = [a for a in tensor.axes if a.type == "space"]
        self.axis_ids = tuple(str(a.id) for a in tensor.axes)
        if len(spatial) not in (2, 3):
            raise UserError(f"the package's input axes {list(self.axis_ids)} are not an image (b, c, y, x) or volume"
                            " (b, c, z, y, x)")
        self.mins, self.steps = zip(*(_spatial_limits(a) for a in spatial))
        channel_axis = {a.type: a for a in tensor.axes}.get("channel")
        self.n_channels = len(channel_axis.channel_names) if channel_axis is not None else 1
        self.spatial_dims = len(spatial)
        self.descr, self.input_id = descr, tensor.id
        self.weight_format, self.device = weight_format, device
        self.pipeline = None

    def load(self) -> None:
        """Load the weights (once; :meth:`predict` calls it)."""
        from bioimageio.core import create_prediction_pipeline

        from bmz_cosdd.artifacts.offline_bioimageio import offline_bioimageio

        if self.pipeline is None:
            # Not core's predict(), which loads and unloads the weights again for every image.
            with offline_bioimageio():  # everything is inside the package: no request leaves this process
                self.pipeline = create_prediction_pipeline(self.descr, weight_format=self.weight_format,
                                                           devices=[self.device] if self.device else None)

    def predict(self, image: np.ndarray, block: int | Sequence[int] = 512) -> dict[str, np.ndarray]:
        """The package's outputs for one image.

        An image that fits in ``block`` (extended to the model's grid by reflection at the far end) is one
        forward pass without halo padding, as prediction from a run folder does; a larger one goes block by
        block with the model's halo (bioimageio.core's blocking).

        Parameters
        ----------
        image
            (C, Y, X), or (C, Z, Y, X) for a 3-D model, in raw intensities (the package normalises).
        block
            Largest block side, one for every spatial axis or one per axis.

        Returns
        -------
        dict
            Output id -> array cropped to the image's spatial shape, e.g. (C, Y, X), as the package computes it.
        """
        from bioimageio.core import Tensor
        from bioimageio.core.digest_spec import create_sample_for_model

        from bmz_cosdd.artifacts.offline_bioimageio import offline_bioimageio

        self.load()
        dims = self.spatial_dims
        data = _fit_to_grid(np.asarray(image, dtype=np.float32), self.mins, self.steps)
        blocksize = _blocksize(data.shape[-dims:], block, self.mins, self.steps)
        with offline_bioimageio():
            sample = create_sample_for_model(
                self.descr, inputs={self.input_id: Tensor.from_numpy(data[None], dims=self.axis_ids)})
            if blocksize is None:
                result = self.pipeline.predict_sample_without_blocking(sample, skip_input_padding=True,
                                                                       skip_output_cropping=True)
            else:
                result = self.pipeline.predict_sample_with_blocking(sample, ns=blocksize)
        crop = (Ellipsis, *[slice(0, size) for size in image.shape[-dims:]])
        return {str(member_id): np.asarray(member.data)[0][crop] for member_id, member in result.members.items()}

    def close(self) -> None:
        """Free the model (once; the predictor is unusable afterwards)."""
        if self.pipeline is not None:
            self.pipeline.unload()
            self.pipeline = None

    def __enter__(self) -> "PackagePredictor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def predict_files_with_package(
    package: str | Path,
    inputs: Sequence[str | Path],
    axes: Optional[str],
    out_dir: str | Path,
    pattern: str = "*",
    weight_format: Optional[str] = None,
    block: int | Sequence[int] = 512,
    device: Optional[str] = None,
    on_image: Optional[Callable[[Path, int, int], None]] = None,
    trust_code: bool = False,
) -> list[Path]:
    """Denoise image files with a model package; writes ``<stem>_<output id>.tif`` to ``out_dir``.

    A package is untrusted input (see :mod:`bmz_cosdd.export.package_trust`): every file it
    names must lie inside it (URLs, absolute paths and ``..`` are refused before anything is
    loaded, and nothing is fetched from the network), and its Python never runs unless it is
    bmz-cosdd's own or ``trust_code`` is set.

    Parameters
    ----------
    package
        A bioimage.io model zip (any model with one (b, c, y, x) or (b, c, z, y, x) input).
    inputs, axes, pattern
        Image files or folders and the axes of their arrays (``None``: ``YX``, or ``ZYX``
        for a 3-D model).
    weight_format
        ``torchscript``, ``pytorch_state_dict`` or ``onnx``. Default: core's choice for a
        package whose code is bmz-cosdd's own, else its TorchScript (then ONNX) weights.
        ``pytorch_state_dict`` runs the package's architecture source: it is refused unless
        that source is byte-identical to the one this version of bmz-cosdd writes for the
        package (and its callable is ours, with no ``import_from``), or ``trust_code``.
    block
        Largest block side, one for every spatial axis or one per axis; an image that fits is
        one piece, larger images are predicted in blocks with the model's halo.
    device
        ``cpu`` or ``cuda`` (default: core's choice).
    trust_code
        Run the package's Python even if bmz-cosdd did not write it (the ``--trust-code``
        option): only for packages whose author you trust.

    Raises
    ------
    bmz_cosdd.errors.UserError
        One line, e.g. for files named outside the package, or for weights that would run
        foreign Python without ``trust_code`` (naming TorchScript weights or ``--trust-code``).
    """
    predictor = PackagePredictor(package, weight_format, device, trust_code)
    dims = predictor.spatial_dims
    loaded = read_inputs(inputs, pattern, axes or "ZYX"[3 - dims:], predictor.n_channels, dims)
    with predictor:
        written: list[Path] = []
        for index, item in enumerate(loaded):
            per_output: dict[str, list[np.ndarray]] = {}
            for sample in item.samples:
                for name, value in predictor.predict(sample, block).items():
                    per_output.setdefault(name, []).append(value)
            written += write_outputs(out_dir, item, per_output)
            if on_image is not None:
                on_image(item.path, index + 1, len(loaded))
    return written


def _blocksize(shape: Sequence[int], block: int | Sequence[int], mins: Sequence[int],
               steps: Sequence[int]) -> Optional[int]:
    """The ParameterizedSize ``n`` of blocks no larger than ``block`` (per axis) nor the image; None: one piece."""
    blocks = [int(block)] * len(shape) if isinstance(block, (int, np.integer)) else [int(b) for b in block]
    if len(blocks) != len(shape):
        raise UserError(f"--tile needs 1 or {len(shape)} sizes (one per spatial axis), got {len(blocks)}")
    if all(size <= b for size, b in zip(shape, blocks)):
        return None
    ns = [(min(b, size) - low) // step for size, b, low, step in zip(shape, blocks, mins, steps) if step]
    return max(0, min(ns)) if ns else None


def _fit_to_grid(image: np.ndarray, mins: Sequence[int], steps: Sequence[int]) -> np.ndarray:
    """Reflect-pad (C, [Z,] Y, X) at the far end of each spatial axis to the next size the model accepts.

    An image smaller than the model's minimum size is extended by (repeated) reflection to that
    size, as prediction from a run folder does; the caller crops the output back.
    """
    pads = []
    for size, low, step in zip(image.shape[-len(mins):], mins, steps):
        if size <= low or step == 0:
            target = max(size, low)
        else:
            target = size if (size - low) % step == 0 else low + ((size - low) // step + 1) * step
        pads.append((0, target - size))
    if not any(p[1] for p in pads):
        return image
    return np.pad(image, [(0, 0)] * (image.ndim - len(pads)) + pads, mode="reflect")
