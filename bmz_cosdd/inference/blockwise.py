"""Out-of-core prediction: Zarr / OME-Zarr / large TIFF in, the same out, block by block with a halo.

Memory stays flat whatever the image size: one window (the block plus its halo
on every spatial axis, all channels) is read, predicted and its inner block
written at a time. A 2-D model's blocks tile each (Y, X) plane, a 3-D model's
each (Z, Y, X) volume; the other axes (S, T, and Z for 2-D models) are looped
over. Blocks lie on a fixed grid of side ``tile - 2 * halo`` per spatial axis
(rounded down to the network's size step), which is also the output's chunk
shape, so every block write replaces whole chunks; an axis that fits in the tile
(extended to the size step) is one block. Windows end at the image's edges (the
far end mirrored to the size step) as in memory
(:mod:`~bmz_cosdd.inference.tiling`). Block ``b`` of every plane
(or volume) is sampled with seed ``seed + b``, as tile ``b`` is in memory: for
an image whose sides are multiples of the block, the result equals in-memory
prediction with the same ``--tile``; for a deterministic network with a halo
covering its receptive field it equals it for any size.

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
from typing import Callable, Iterator, Optional, Sequence

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
from bmz_cosdd.data.axes import per_axis
from bmz_cosdd.inference.tiling import (
    block_length,
    check_tile,
    effective_halo,
    pad_mode,
    spatial_sizes,
    tile_warning,
    tile_window,
)
from bmz_cosdd.methods.base import PredictOptions

__all__ = ["Block", "block_grid", "block_progress", "is_out_of_core_input", "output_path", "predict_out_of_core"]

# Input chunks larger than this many times the window (per axis) would be decompressed whole for every block.
_CHUNK_FACTOR = 4
# Axes looped over outside the spatial block grid (Z only for 2-D models).
LOOP_AXES = "STZ"


@dataclass(frozen=True)
class Block:
    """One inner block of the spatial grid: index, start and extent per spatial axis (clipped at the image's edge)."""

    index: int
    start: tuple[int, ...]
    size: tuple[int, ...]


def block_grid(shape: Sequence[int], block: int | Sequence[int]) -> list[Block]:
    """Row-major grid of inner blocks (``block`` long per spatial axis) covering a plane or volume of ``shape``."""
    sides = spatial_sizes(block, len(shape))
    starts = itertools.product(*(range(0, size, side) for size, side in zip(shape, sides)))
    return [Block(i, start, tuple(min(side, size - s) for s, side, size in zip(start, sides, shape)))
            for i, start in enumerate(starts)]


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


def _spatial_axes(trained: TrainedModel) -> str:
    """The axes a model's blocks extend over: ``"YX"`` or ``"ZYX"``."""
    return "ZYX"[-trained.config.data.spatial_dims :]


def _index(axes: str, fixed: dict[str, int], region: dict[str, slice]) -> tuple:
    return tuple(fixed[a] if a in fixed else region.get(a, slice(None)) for a in axes)


def _kept_axes(axes: str, spatial: str) -> str:
    return "".join(a for a in axes if a in "C" + spatial)


def _read_window(source: LargeArray, fixed: dict[str, int], spatial: str, start: Sequence[int],
                 size: Sequence[int]) -> np.ndarray:
    """The window of ``size`` at ``start`` (>= 0) along the ``spatial`` axes, (C, *size) float64; past the image's
    far end (by less than a size step) mirrored as in-memory tiling extends the whole image
    (:func:`~bmz_cosdd.inference.tiling.extend_to_step`)."""
    dims = [source.shape[source.axes.index(a)] for a in spatial]
    beyond = [max(0, s + n - d) for s, n, d in zip(start, size, dims)]
    # Enough of the image before the far end for its mirror image (np.pad reflects the window, not the image).
    lo = [max(0, min(s, d - 1 - b)) if b else s for s, d, b in zip(start, dims, beyond)]
    hi = [min(d, s + n) for d, s, n in zip(dims, start, size)]
    region = {a: slice(low, high) for a, low, high in zip(spatial, lo, hi)}
    raw = np.asarray(source.data[_index(source.axes, fixed, region)], dtype=np.float64)
    kept = _kept_axes(source.axes, spatial)
    window = raw.transpose([kept.index(a) for a in "C" + spatial if a in kept])
    if "C" not in kept:
        window = window[None]
    if any(beyond):
        window = np.pad(window, [(0, 0)] + [(0, b) for b in beyond], mode=pad_mode(dims))
    return window[(slice(None),) + tuple(slice(s - low, s - low + n) for s, low, n in zip(start, lo, size))]


def _write_block(target: LargeArray, fixed: dict[str, int], spatial: str, block: Block, values: np.ndarray) -> None:
    kept = _kept_axes(target.axes, spatial)
    stored = values if "C" in kept else values[0]
    order = [("C" + spatial if "C" in kept else spatial).index(a) for a in kept]
    region = {a: slice(s, s + n) for a, s, n in zip(spatial, block.start, block.size)}
    target.data[_index(target.axes, fixed, region)] = np.ascontiguousarray(stored.transpose(order), dtype=np.float32)


def _check_chunks(source: LargeArray, spatial: str, tile: Sequence[int]) -> None:
    chunks = spatial_chunks(source, spatial)
    if chunks is not None and any(c > _CHUNK_FACTOR * t for c, t in zip(chunks, tile)):
        chunk_text, tile_text = " x ".join(map(str, chunks)), " x ".join(map(str, tile))
        raise UserError(
            f"{source.path.name} is stored in chunks of {chunk_text} px ({spatial}), which every {tile_text} px tile"
            f" would decompress whole; rechunk it to about {tile_text} px (or raise --tile)"
        )


def predict_out_of_core(
    trained: TrainedModel,
    path: str | Path,
    axes: str | None,
    out_dir: str | Path,
    options: PredictOptions | None = None,
    tile: int | Sequence[int] = 512,
    seed: int = 0,
    on_block: Optional[Callable[[int, int], None]] = None,
    say: Optional[Callable[[str], None]] = None,
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
        Window length fed to the network along each spatial axis, halo included: one for every axis or one per
        spatial axis of the model (``(Y, X)`` or ``(Z, Y, X)``); the inner block is the output's chunk.
    seed
        Block ``b`` of each plane (volume for 3-D models) is sampled with ``seed + b``.
    on_block
        Called as ``on_block(done, total)`` after every block (resumed blocks count as done).
    say
        Receives a one-line warning when ``tile`` keeps under half of each window's side
        (see :func:`~bmz_cosdd.inference.tiling.tile_warning`).

    Returns
    -------
    list of pathlib.Path
        The outputs written.

    Raises
    ------
    UserError
        For unreadable input, a channel count the model does not take, a 3-D model given no Z axis, input
        chunks far larger than the tile, a tile too small for the model, ``keep_samples``, or an unfinished
        output from other settings.
    """
    options = resolve_options(trained, options)
    if options.keep_samples:
        raise UserError("posterior samples cannot be kept in out-of-core prediction (drop --save-samples/--target)")
    source = open_large(path, axes)
    n_channels = source.shape[source.axes.index("C")] if "C" in source.axes else 1
    if n_channels != trained.stats.n_channels:
        raise UserError(f"{source.path.name}: the model expects {trained.stats.n_channels} channel(s), the input has"
                        f" {n_channels} (axes {source.axes}, shape {source.shape})")
    spatial = _spatial_axes(trained)
    if "Z" in spatial and "Z" not in source.axes:
        raise UserError(f"{source.path.name}: this model denoises volumes; its axes {source.axes} have no Z")
    steps = per_axis(trained.method.size_step(trained.model), len(spatial))
    halos = per_axis(trained.method.halo(trained.model), len(spatial))
    tiles = check_tile(tile, halos, steps, len(spatial))
    plane = [source.shape[source.axes.index(a)] for a in spatial]
    warning = tile_warning(plane, tiles, halos, steps)
    halos = tuple(effective_halo(h, s) for h, s in zip(halos, steps))
    # As in memory: an axis that fits in the tile, extended to the size step, is one block without halo; the
    # others are cut into blocks with a halo, windows shifted inwards at the edges (tile_window).
    block = tuple(block_length(d, t, h, s) for d, t, h, s in zip(plane, tiles, halos, steps))
    extended = [-(-d // s) * s for d, s in zip(plane, steps)]
    _check_chunks(source, spatial, tiles)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)

    if warning is not None and say is not None:
        say(warning)
    grid = block_grid(plane, block)
    loop_axes = [a for a in source.axes if a in LOOP_AXES and a not in spatial]
    loops = [dict(zip(loop_axes, p)) for p in itertools.product(*(range(source.shape[source.axes.index(a)])
                                                                  for a in loop_axes))]
    total = len(loops) * len(grid)
    chunks = tuple(1 if a in loop_axes else n_channels if a == "C" else min(block[spatial.index(a)], source.shape[i])
                   for i, a in enumerate(source.axes))
    settings = {
        "input": str(source.path.resolve()), "shape": list(source.shape), "axes": source.axes,
        "model": str(trained.source.resolve()), "model_step": trained.step, "estimator": options.estimator,
        "samples": options.samples, "sample_batch": options.sample_batch, "seed": seed, "tile": list(tiles),
        "block": list(block), "halo": list(halos),
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
        for p, fixed in enumerate(loops):
            for blk in grid:
                if p * len(grid) + blk.index < done:
                    continue
                spans = [tile_window(s, b, h, e) for s, b, h, e in zip(blk.start, block, halos, extended)]
                starts = [a for a, _ in spans]
                window = _read_window(source, fixed, spatial, starts, [side for _, side in spans])
                x = torch.from_numpy(normalise(window, trained.stats, spatial_dims=len(spatial)))[None]
                inner = (Ellipsis,) + tuple(slice(s - a, s - a + n) for s, a, n in zip(blk.start, starts, blk.size))
                outputs = {name: value[inner].float().cpu().numpy() for name, value in run_tile(x, blk.index).items()}
                for name, value in to_raw(trained, outputs).items():
                    if name not in targets:
                        targets[name] = create_output(output_path(out, source, name), source, chunks, resume=False)
                    _write_block(targets[name], fixed, spatial, blk, value)
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
