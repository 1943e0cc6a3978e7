"""Predict images and volumes of any size in overlapping tiles so that no seams appear.

An image is first extended at the far end of each spatial axis to a multiple of the network's size
step (mirrored); the network then sees it as it saw its training crops, with its own padding at
the edges. An image that fits in one tile is predicted in one piece: the network's cost and nothing
more. A larger one is cut into tiles: each is the inner region plus ``halo`` pixels of context on
each side of every spatial axis (none past the extended image's edges), and only the inner region
of each output is kept. Tile origins fall on multiples of the size step, so a translation-equivariant
network gives exactly the same values tiled as in one piece whenever the halo covers its receptive
field. Images are (C, Y, X), volumes (C, Z, Y, X). The halo and the size step are one number for
every axis or one per spatial axis: an anisotropic 3-D network (z kept at full resolution, short z
kernels) has a smaller halo and step along Z than along Y and X.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from bmz_cosdd.data.axes import per_axis
from bmz_cosdd.errors import UserError

__all__ = [
    "TileProgress", "block_length", "check_tile", "effective_halo", "extend_to_step", "pad_mode", "per_axis",
    "predict_tiled", "smallest_tile", "spatial_sizes", "suggested_tile", "tile_layout", "tile_warning", "tile_window",
]

# Tiling rule: a tile should keep at least half of its side: its kept core (tile - 2 x halo) is at least half the
# tile along every axis cut into tiles (a quarter of a square 2-D tile's pixels). The smallest such tile (4 x halo)
# is suggested when --tile is too small, and a tile keeping less is warned about with the number of tiles it
# makes: the network then computes more than 4 times the pixels it keeps.
KEPT_SIDE = 0.5
# A progress bar for the tiles of an image appears from this many tiles on.
MANY_TILES = 8


def _round_up(value: int, step: int) -> int:
    return int(math.ceil(value / step) * step)


def spatial_sizes(tile: int | Sequence[int], n_spatial: int) -> tuple[int, ...]:
    """``tile`` as one size per spatial axis: an int applies to every axis, a sequence gives one per axis.

    Raises
    ------
    UserError
        If a sequence does not hold exactly ``n_spatial`` sizes.
    """
    try:
        return per_axis(tile, n_spatial)
    except ValueError:
        sizes = tuple(int(t) for t in tile)
        raise UserError(f"--tile needs 1 or {n_spatial} sizes (one per spatial axis), got {len(sizes)}: {sizes}") from None


def pad_mode(spatial_shape: Sequence[int]) -> str:
    """How images are extended past their edges: mirrored, or repeated when an axis is a single pixel thick."""
    return "reflect" if min(spatial_shape) > 1 else "edge"


def extend_to_step(image: np.ndarray, steps: Sequence[int]) -> np.ndarray:
    """``image`` (..., *spatial) mirrored at the far end of each spatial axis to a multiple of its step.

    ``steps`` holds one size step per trailing spatial axis; the image itself is returned when no
    axis needs extending. A single-pixel axis is repeated instead (see :func:`pad_mode`).
    """
    shape = image.shape[image.ndim - len(steps):]
    pads = [(0, _round_up(size, s) - size) for size, s in zip(shape, steps)]
    if not any(after for _, after in pads):
        return image
    return np.pad(image, [(0, 0)] * (image.ndim - len(pads)) + pads, mode=pad_mode(shape))


def effective_halo(halo: int, step: int) -> int:
    """The halo tiling really adds each side: ``halo`` rounded up to a multiple of ``step``."""
    return _round_up(max(int(halo), 0), step)


def smallest_tile(halo: int, step: int) -> int:
    """The smallest tile side that works at all: one size step kept inside the (rounded) halo on each side."""
    return step + 2 * effective_halo(halo, step)


def suggested_tile(halo: int, step: int) -> int:
    """The smallest tile side worth using: its kept core (tile - 2 x halo) is at least half the tile side.

    With the halo ``h`` rounded up to the step, that is ``4 h`` (and never below :func:`smallest_tile`).
    """
    h = effective_halo(halo, step)
    return max(_round_up(int(math.ceil(2 * h / (1 - KEPT_SIDE))), step), smallest_tile(halo, step))


def _sizes_text(sizes: Sequence[int]) -> str:
    return " x ".join(str(int(s)) for s in sizes)


def _tile_option(sizes: Sequence[int]) -> str:
    """Sizes as ``--tile`` takes them: one number when they agree, else comma-separated per axis."""
    return str(sizes[0]) if len(set(sizes)) == 1 else ",".join(str(int(s)) for s in sizes)


def _suggested(halos: Sequence[int], steps: Sequence[int]) -> str:
    return _tile_option([suggested_tile(h, s) for h, s in zip(halos, steps)])


def check_tile(tile: int | Sequence[int], halo: int | Sequence[int], step: int | Sequence[int],
               n_spatial: int) -> tuple[int, ...]:
    """``tile`` per spatial axis, refused in one line when it keeps no core along some axis.

    ``halo`` and ``step`` are one value or one per spatial axis; the refusal suggests
    :func:`suggested_tile` per axis (e.g. ``--tile 16,256,256`` for an anisotropic volume model).
    """
    sizes = spatial_sizes(tile, n_spatial)
    halos, steps = per_axis(halo, n_spatial), per_axis(step, n_spatial)
    if any(t < smallest_tile(h, s) for t, h, s in zip(sizes, halos, steps)):
        kept = [effective_halo(h, s) for h, s in zip(halos, steps)]
        raise UserError(
            f"--tile {_tile_option(sizes)} is too small for this model (halo {_sizes_text(kept)} px each side):"
            f" use --tile {_suggested(halos, steps)} or more, which keeps at least half of each tile's side"
        )
    return sizes


def tile_warning(shape: Sequence[int], tile: int | Sequence[int], halo: int | Sequence[int],
                 step: int | Sequence[int]) -> Optional[str]:
    """One line when tiling an image of spatial ``shape`` wastes most of the work, else None.

    Warns when, along an axis cut into more than one tile, a tile keeps under half of its side (for square 2-D
    tiles: under a quarter of its pixels); the line gives the number of tiles and the suggested --tile.
    ``halo`` and ``step`` are one value or one per spatial axis.
    """
    n = len(shape)
    sizes, halos, steps = spatial_sizes(tile, n), per_axis(halo, n), per_axis(step, n)
    kept_halos = [effective_halo(h, s) for h, s in zip(halos, steps)]
    layout = [tile_layout(size, t, h, s) for size, t, h, s in zip(shape, sizes, kept_halos, steps)]
    cores = [max(s, (t - 2 * h) // s * s) for t, h, s in zip(sizes, kept_halos, steps)]
    wasteful = any(count > 1 and c < KEPT_SIDE * (c + 2 * h) for (_, count), c, h in zip(layout, cores, kept_halos))
    if not wasteful:
        return None
    count = math.prod(k for _, k in layout)
    halo_text = _sizes_text(kept_halos) if len(set(kept_halos)) > 1 else str(kept_halos[0])
    return (
        f"warning: --tile {_tile_option(sizes)} keeps only {_sizes_text(cores)} px of every"
        f" {_sizes_text([c + 2 * h for c, h in zip(cores, kept_halos)])} px tile (halo {halo_text} px each side):"
        f" {count} tiles for this {_sizes_text(shape)} image; use --tile {_suggested(halos, steps)} or more (keeps"
        f" at least half of each tile's side)"
    )


def block_length(size: int, tile: int, halo: int, step: int) -> int:
    """Longest inner length of a tile along an axis of length ``size``.

    The whole axis, extended to the size step, when that fits in ``tile`` (one piece, no halo: the
    network sees the whole axis); otherwise the longest multiple of ``step`` that leaves ``halo``
    on both sides within ``tile`` (at least one step).
    """
    whole = _round_up(size, step)
    return whole if whole <= tile else max(step, (tile - 2 * halo) // step * step)


def tile_window(origin: int, inner: int, halo: int, total: int) -> tuple[int, int]:
    """Start and length of the window fed to the network for the inner region at ``origin``.

    Every window along an axis of (extended) length ``total`` has one length, ``inner + 2 * halo``
    or the whole axis; one at an edge is shifted inwards to lie inside the axis (the network pads
    there as it does for the whole image), so its inner region gets more context, not less.
    """
    side = min(total, inner + 2 * halo)
    return min(max(0, origin - halo), total - side), side


def tile_layout(size: int, tile: int, halo: int, step: int) -> tuple[int, int]:
    """Inner tile length and tile count along one axis of length ``size``.

    As few tiles as :func:`block_length` allows (one when the axis fits), with the image spread
    evenly over them, so little is computed beyond the image itself.
    """
    largest = block_length(size, tile, halo, step)
    count = int(math.ceil(size / largest))
    inner = _round_up(int(math.ceil(size / count)), step)
    return inner, int(math.ceil(size / inner))


def predict_tiled(
    fn: Callable[[Tensor], dict[str, Tensor]],
    image: np.ndarray,
    tile: int | Sequence[int],
    halo: int | Sequence[int],
    step: int | Sequence[int],
    on_tile: Optional[Callable[[int, int], None]] = None,
) -> dict[str, np.ndarray]:
    """Apply ``fn`` to overlapping tiles of ``image`` (or to all of it when it fits) and stitch the outputs.

    Parameters
    ----------
    fn
        Takes a (1, C, *tile_shape) float32 tensor and returns named tensors whose
        last axes are the tile's spatial axes, e.g. (1, C, h, w) or (N, 1, C, d, h, w).
    image
        (C, Y, X) image or (C, Z, Y, X) volume: every axis after the first is tiled.
    tile
        Largest tile length fed to ``fn`` along each spatial axis, halo included:
        one for every axis, or one per spatial axis (e.g. ``(64, 512, 512)``). An axis no longer
        than this (once extended to the size step) is not cut.
    halo
        Context on each side of every spatial axis cut into tiles (one value, or one per spatial
        axis); rounded up to a multiple of ``step``.
    step
        Sizes fed to ``fn`` are multiples of this (one value, or one per spatial axis).
    on_tile
        Called as ``on_tile(done, total)`` after each tile.

    Returns
    -------
    dict
        The stitched outputs, float32 numpy arrays cropped to the image's spatial shape.
    """
    shape = image.shape[1:]
    steps = per_axis(step, len(shape))
    halos = [effective_halo(h, s) for h, s in zip(per_axis(halo, len(shape)), steps)]
    layout = [tile_layout(size, t, h, s) for size, t, h, s in zip(shape, spatial_sizes(tile, len(shape)), halos, steps)]
    inner = [length for length, _ in layout]
    extended = np.asarray(extend_to_step(image, steps), dtype=np.float32)
    totals = extended.shape[1:]
    origins = list(itertools.product(*(range(0, total, length) for total, length in zip(totals, inner))))
    outputs: dict[str, np.ndarray] = {}
    for done, origin in enumerate(origins, 1):
        spans = [tile_window(o, length, h, total) for o, length, h, total in zip(origin, inner, halos, totals)]
        stops = [min(total, o + length) for o, length, total in zip(origin, inner, totals)]
        window = extended[(slice(None),) + tuple(slice(a, a + side) for a, side in spans)]
        keep = (Ellipsis,) + tuple(slice(o - a, e - a) for o, e, (a, _) in zip(origin, stops, spans))
        target = (Ellipsis,) + tuple(slice(o, e) for o, e in zip(origin, stops))
        result = fn(torch.from_numpy(np.ascontiguousarray(window))[None])
        for name, value in result.items():
            kept = value[keep].detach().float().cpu().numpy()
            if len(origins) == 1:
                outputs[name] = kept
                continue
            if name not in outputs:
                outputs[name] = np.empty(kept.shape[: kept.ndim - len(shape)] + tuple(totals), dtype=np.float32)
            outputs[name][target] = kept
        if on_tile is not None:
            on_tile(done, len(origins))
    crop = (Ellipsis,) + tuple(slice(0, size) for size in shape)
    return {name: value[crop] for name, value in outputs.items()}


class TileProgress:
    """A progress bar on stderr over the tiles of one image at a time, shown for images of many tiles.

    Pass it as ``on_tile`` (called as ``on_tile(done, total)`` after each tile): the bar appears with the first
    image of at least ``many`` tiles, restarts with each image and is removed by :meth:`close` (or on leaving a
    ``with`` block). Disabled, it does nothing.

    Parameters
    ----------
    enabled
        Show anything at all (the CLI: an interactive stderr and no ``--quiet``).
    many
        The fewest tiles an image needs for the bar to appear.
    console
        A ``rich.console.Console`` to draw on (default: stderr).
    """

    def __init__(self, enabled: bool = True, many: int = MANY_TILES, console: object = None) -> None:
        self.enabled = enabled
        self.many = many
        self.console = console
        self._progress = None
        self._task = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total < self.many:
            return
        if self._progress is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("tiles"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                      console=self.console or Console(stderr=True), transient=True)
            self._progress.start()
            self._task = self._progress.add_task("tiles", total=total)
        if done <= 1:
            self._progress.reset(self._task, total=total, completed=done)
        else:
            self._progress.update(self._task, total=total, completed=done)

    def close(self) -> None:
        """Remove the bar (if it was shown)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> "TileProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
