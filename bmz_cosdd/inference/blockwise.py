"""Out-of-core prediction: Zarr / OME-Zarr / large TIFF in, the same out, block by block with a halo.

Memory stays flat whatever the image size: one window of ``tile x tile`` pixels
(the block plus its halo, all channels) is read, predicted and its inner block
written at a time. Blocks lie on a fixed grid of side ``tile - 2 * halo``
(rounded down to the network's size step), which is also the output's chunk
shape, so every block write replaces whole chunks. Block ``b`` of every 2-D plane
is sampled with seed ``seed + b``, as tile ``b`` is in memory: for an image
whose sides are multiples of the block, the result equals in-memory prediction
with the same ``--tile``; for a deterministic network with a halo covering its
receptive field it equals it for any size.

A record beside the outputs (``.<stem>.blockwise.json``, written atomically
after every block) holds the settings and how many blocks (in their fixed
order) are written; a killed prediction
run again with the same settings continues where it stopped and gives the same
result. The outputs are written at ``<name>.partial`` and renamed when complete.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from bmz_cosdd.data.large_arrays import (
    LargeArray,
    create_output,
    finish_output,
    open_large,
    partial_path,
    spatial_chunks,
)
from bmz_cosdd.data.io import atomic_write_text
from bmz_cosdd.data.normalisation import normalise
from bmz_cosdd.errors import UserError
from bmz_cosdd.inference.predictor import TrainedModel, prediction_context, resolve_options, tile_function, to_raw
from bmz_cosdd.methods.base import PredictOptions

__all__ = ["Block", "block_grid", "block_progress", "is_out_of_core_input", "output_path", "predict_out_of_core"]

# Input chunks larger than this many times the window (per side) would be decompressed whole for every block.
_CHUNK_FACTOR = 4
PLANE_AXES = "STZ"


@dataclass(frozen=True)
class Block:
    """One inner block of a 2-D plane: its index on the grid and its extent (clipped at the image's edge)."""

    index: int
    y0: int
    x0: int
    height: int
    width: int


def block_grid(height: int, width: int, block: int) -> list[Block]:
    """Row-major grid of ``block x block`` inner blocks covering a ``height x width`` plane."""
    blocks = []
    for i, (y0, x0) in enumerate(itertools.product(range(0, height, block), range(0, width, block))):
        blocks.append(Block(i, y0, x0, min(block, height - y0), min(block, width - x0)))
    return blocks


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def output_path(out_dir: Path, source: LargeArray, name: str) -> Path:
    """``<out>/<stem>_<name>`` with the input's container: ``.ome.zarr``, ``.zarr`` or ``.tif``."""
    suffix = {"ome-zarr": ".ome.zarr", "zarr": ".zarr", "tiff": ".tif"}[source.kind]
    return out_dir / f"{_stem(source.path)}_{name}{suffix}"


def _index(axes: str, plane: dict[str, int], y: slice, x: slice) -> tuple:
    return tuple(plane[a] if a in plane else y if a == "Y" else x if a == "X" else slice(None) for a in axes)


def _kept_axes(axes: str) -> str:
    return "".join(a for a in axes if a in "CYX")


def _read_window(source: LargeArray, plane: dict[str, int], y0: int, x0: int, size: int) -> np.ndarray:
    """The ``size x size`` window at (y0, x0) (may start before 0 or end past the image), (C, size, size)
    float64, mirrored at the image's edges as in-memory tiling pads the whole image."""
    height, width = source.shape[source.axes.index("Y")], source.shape[source.axes.index("X")]
    lo_y, hi_y = max(0, y0), min(height, y0 + size)
    lo_x, hi_x = max(0, x0), min(width, x0 + size)
    raw = np.asarray(source.data[_index(source.axes, plane, slice(lo_y, hi_y), slice(lo_x, hi_x))], dtype=np.float64)
    kept = _kept_axes(source.axes)
    order = [kept.index(a) for a in "CYX" if a in kept]
    window = raw.transpose(order)
    if "C" not in kept:
        window = window[None]
    pads = [(0, 0), (lo_y - y0, y0 + size - hi_y), (lo_x - x0, x0 + size - hi_x)]
    if any(p for pair in pads for p in pair):
        window = np.pad(window, pads, mode="reflect" if min(height, width) > 1 else "edge")
    return window


def _write_block(target: LargeArray, plane: dict[str, int], block: Block, values: np.ndarray) -> None:
    kept = _kept_axes(target.axes)
    stored = values if "C" in kept else values[0]
    order = [("CYX" if "C" in kept else "YX").index(a) for a in kept]
    index = _index(target.axes, plane, slice(block.y0, block.y0 + block.height),
                   slice(block.x0, block.x0 + block.width))
    target.data[index] = np.ascontiguousarray(stored.transpose(order), dtype=np.float32)


def _check_chunks(source: LargeArray, tile: int) -> None:
    chunks = spatial_chunks(source)
    if chunks is not None and max(chunks) > _CHUNK_FACTOR * tile:
        raise UserError(
            f"{source.path.name} is stored in chunks of {chunks[0]} x {chunks[1]} px, which every {tile} px tile"
            f" would decompress whole; rechunk it to about {tile} x {tile} px (or raise --tile)"
        )


def predict_out_of_core(
    trained: TrainedModel,
    path: str | Path,
    axes: str | None,
    out_dir: str | Path,
    options: PredictOptions | None = None,
    tile: int = 512,
    seed: int = 0,
    on_block: Optional[Callable[[int, int], None]] = None,
) -> list[Path]:
    """Denoise a Zarr / OME-Zarr array or a large TIFF block by block, resumably.

    Parameters
    ----------
    trained
        From :func:`bmz_cosdd.inference.predictor.load_run`.
    path
        The input: a Zarr array, an OME-Zarr image (its full resolution) or a TIFF.
    axes
        Axes of the input (None: from OME-Zarr metadata).
    out_dir
        Folder for ``<stem>_<output>`` in the input's container (see :func:`output_path`).
    options
        Estimator and sampling settings; posterior samples cannot be kept.
    tile
        Window side fed to the network, halo included; the inner block is the output's chunk.
    seed
        Block ``b`` of each plane is sampled with ``seed + b``.
    on_block
        Called as ``on_block(done, total)`` after every block (resumed blocks count as done).

    Returns
    -------
    list of pathlib.Path
        The outputs written.

    Raises
    ------
    UserError
        For unreadable input, a channel count the model does not take, input chunks far larger than the
        tile, a tile too small for the model, ``keep_samples``, or an unfinished output from other settings.
    """
    options = resolve_options(trained, options)
    if options.keep_samples:
        raise UserError("posterior samples cannot be kept in out-of-core prediction (drop --save-samples/--target)")
    source = open_large(path, axes)
    n_channels = source.shape[source.axes.index("C")] if "C" in source.axes else 1
    if n_channels != trained.stats.n_channels:
        raise UserError(f"{source.path.name}: the model expects {trained.stats.n_channels} channel(s), the input has"
                        f" {n_channels} (axes {source.axes}, shape {source.shape})")
    step, halo = trained.method.size_step(trained.model), trained.method.halo(trained.model)
    halo = -(-halo // step) * step
    block = (tile - 2 * halo) // step * step
    if block < step:
        raise UserError(f"--tile {tile} is too small for this model (at least {step + 2 * halo})")
    _check_chunks(source, tile)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)

    height, width = source.shape[source.axes.index("Y")], source.shape[source.axes.index("X")]
    grid = block_grid(height, width, block)
    plane_axes = [a for a in source.axes if a in PLANE_AXES]
    planes = [dict(zip(plane_axes, p)) for p in itertools.product(*(range(source.shape[source.axes.index(a)])
                                                                    for a in plane_axes))]
    total = len(planes) * len(grid)
    chunks = tuple(1 if a in PLANE_AXES else n_channels if a == "C" else block for a in source.axes)
    settings = {
        "input": str(source.path.resolve()), "shape": list(source.shape), "axes": source.axes,
        "model": str(trained.source.resolve()), "model_step": trained.step, "estimator": options.estimator,
        "samples": options.samples, "sample_batch": options.sample_batch, "seed": seed, "tile": tile,
        "block": block, "halo": halo,
    }
    record_path = out / f".{_stem(source.path)}.blockwise.json"
    record = _load_record(record_path)
    resume = record is not None
    if resume and record["settings"] != settings:
        changed = sorted(k for k in settings if record["settings"].get(k) != settings[k])
        raise UserError(
            f"{out} holds an unfinished prediction of {source.path.name} with other settings ({', '.join(changed)});"
            f" rerun with the same settings to finish it, or delete {record_path.name} and the .partial outputs"
        )
    if resume and not all(partial_path(output_path(out, source, name)).exists()
                          for name in record["outputs"]):
        resume = False  # the unfinished outputs are gone: start again
    done = int(record["done"]) if resume else 0  # blocks go in a fixed order: the first `done` are written
    targets: dict[str, LargeArray] = {}
    if resume:
        for name in record["outputs"]:
            targets[name] = create_output(output_path(out, source, name), source, chunks, resume=True)
    run_tile = tile_function(trained, options, seed)
    if on_block is not None:
        on_block(done, total)
    with prediction_context(trained):
        for p, plane in enumerate(planes):
            for blk in grid:
                if p * len(grid) + blk.index < done:
                    continue
                window = _read_window(source, plane, blk.y0 - halo, blk.x0 - halo, block + 2 * halo)
                x = torch.from_numpy(normalise(window, trained.stats))[None]
                outputs = {name: value[..., halo : halo + blk.height, halo : halo + blk.width].float().cpu().numpy()
                           for name, value in run_tile(x, blk.index).items()}
                for name, value in to_raw(trained, outputs).items():
                    if name not in targets:
                        targets[name] = create_output(output_path(out, source, name), source, chunks, resume=False)
                    _write_block(targets[name], plane, blk, value)
                done += 1
                record = {"settings": settings, "outputs": sorted(targets), "done": done}
                atomic_write_text(record_path, json.dumps(record, indent=1) + "\n")
                if on_block is not None:
                    on_block(done, total)
    written = [finish_output(array, output_path(out, source, name)) for name, array in targets.items()]
    record_path.unlink(missing_ok=True)
    return written


def _load_record(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if {"settings", "outputs", "done"} <= set(record):
            return record
    except (OSError, ValueError):
        pass
    return None  # an unreadable record: start again


def is_out_of_core_input(path: str | Path, force: bool = False, threshold_bytes: int = 1 << 30) -> bool:
    """Zarr inputs always go block by block; TIFFs when ``force`` or larger than ``threshold_bytes`` (1 GiB)."""
    from bmz_cosdd.data.large_arrays import TIFF_SUFFIXES, is_zarr

    p = Path(path)
    if is_zarr(p):
        return True
    return p.is_file() and p.suffix.lower() in TIFF_SUFFIXES and (force or p.stat().st_size > threshold_bytes)


@contextlib.contextmanager
def block_progress(label: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr (blocks done of total, ETA); yields the ``on_block`` callback."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("blocks"),
                        TimeRemainingColumn(), console=Console(stderr=True), disable=not enabled)
    task = progress.add_task(label, total=None)
    started = False

    def update(done: int, total: int) -> None:
        nonlocal started
        if not started:  # only once the input is checked: an error stays one line
            progress.start()
            started = True
        progress.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if started:
            progress.stop()
