"""Images too large for memory: Zarr / OME-Zarr and large TIFF read and written block by block.

A :class:`LargeArray` is an array-like (``shape``, ``dtype``, slicing) with its
axes string. Zarr arrays are read chunk by chunk by zarr; OME-Zarr groups (0.4
``multiscales`` attributes, or 0.5 under ``ome``) give their full-resolution
array and its axes; TIFF files are memory-mapped when their pixels are stored
contiguously and read through tifffile's zarr view otherwise. Outputs are
written next to the final path (``<name>.partial``) and renamed into place when
complete, so an interrupted prediction never leaves a file that looks finished.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bmz_cosdd.data.axes import parse_axes
from bmz_cosdd.errors import UserError

__all__ = ["LargeArray", "create_output", "finish_output", "is_zarr", "open_large", "partial_path", "spatial_chunks"]

TIFF_SUFFIXES = (".tif", ".tiff")
_OME_AXES = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}


@dataclass
class LargeArray:
    """An image read (or written) in blocks.

    Attributes
    ----------
    data : array-like
        zarr array, numpy memmap or tifffile zarr view: ``shape``, ``dtype``, slicing.
    axes : str
        One letter per dimension (S, T, Z, C, Y, X).
    path : pathlib.Path
    kind : str
        ``"zarr"``, ``"ome-zarr"`` or ``"tiff"``.
    chunks : tuple of int or None
        Storage chunk shape, None when the data are contiguous (memory map).
    ome : dict
        The OME-Zarr metadata of the input (``multiscales`` entry), reused for the outputs.
    zarr_format : int
        2 or 3 for Zarr inputs.
    """

    data: Any
    axes: str
    path: Path
    kind: str
    chunks: tuple[int, ...] | None = None
    ome: dict[str, Any] = field(default_factory=dict)
    zarr_format: int = 3

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape)


def is_zarr(path: str | Path) -> bool:
    """Whether ``path`` is a Zarr array or group (a folder with zarr metadata)."""
    p = Path(path)
    return p.is_dir() and any((p / name).is_file() for name in ("zarr.json", ".zarray", ".zgroup"))


def _zarr_axes(attrs: dict[str, Any]) -> tuple[str | None, dict[str, Any], str | None]:
    """(axes, multiscales entry, path of the full-resolution array) from OME-Zarr attributes."""
    meta = attrs.get("ome", attrs)
    scales = meta.get("multiscales")
    if not scales:
        return None, {}, None
    entry = scales[0]
    names = [a["name"] if isinstance(a, dict) else a for a in entry.get("axes", [])]
    axes = "".join(_OME_AXES.get(str(n).lower(), "?") for n in names) if names else None
    path = entry["datasets"][0]["path"] if entry.get("datasets") else None
    return axes, entry, path


def open_large(path: str | Path, axes: str | None) -> LargeArray:
    """Open a Zarr array, an OME-Zarr image or a TIFF for reading in blocks.

    Parameters
    ----------
    path : str or pathlib.Path
    axes : str or None
        Axes of the array; may be None for OME-Zarr (they are in its metadata,
        and a given value must agree with them).

    Raises
    ------
    UserError
        For a missing or unreadable file, an OME-Zarr whose axes disagree with
        ``axes``, or an axes string that does not fit the array.
    """
    import zarr

    p = Path(path)
    if not p.exists():
        raise UserError(f"no such file or folder: {p}")
    if p.suffix.lower() in TIFF_SUFFIXES:
        import tifffile

        try:
            data: Any = tifffile.memmap(p, mode="r")
            chunks = None
        except Exception:  # compressed or tiled: tifffile reads it page by page through a zarr view
            try:
                data = zarr.open(tifffile.imread(p, aszarr=True), mode="r")
            except Exception as exc:
                raise UserError(f"cannot read {p}: {str(exc).splitlines()[0]}") from None
            chunks = tuple(int(c) for c in data.chunks)
        if axes is None:
            raise UserError(f"{p.name}: give --axes for TIFF inputs")
        return LargeArray(data, parse_axes(axes, data.ndim, p.name, data.shape), p, "tiff", chunks)
    if not is_zarr(p):
        raise UserError(f"{p} is neither a TIFF nor a Zarr array or group")
    try:
        node = zarr.open(str(p), mode="r")
    except Exception as exc:
        raise UserError(f"cannot open {p} as Zarr: {str(exc).splitlines()[0]}") from None
    kind, ome = "zarr", {}
    if isinstance(node, zarr.Group):
        ome_axes, ome, dataset = _zarr_axes(dict(node.attrs))
        if dataset is None:
            raise UserError(f"{p} is a Zarr group without OME-Zarr multiscales metadata; give the array inside it")
        node = node[dataset]
        kind = "ome-zarr"
        if ome_axes is not None and "?" not in ome_axes:
            if axes is not None and parse_axes(axes, node.ndim, p.name) != ome_axes:
                raise UserError(f"{p.name}: --axes {axes} disagrees with the OME-Zarr axes {ome_axes}")
            axes = ome_axes
    if axes is None:
        raise UserError(f"{p.name}: give --axes (the Zarr array has no OME axes metadata)")
    parsed = parse_axes(axes, node.ndim, p.name, node.shape)
    return LargeArray(node, parsed, p, kind, tuple(int(c) for c in node.chunks), ome, node.metadata.zarr_format)


def spatial_chunks(array: LargeArray, spatial: str = "YX") -> tuple[int, ...] | None:
    """The chunk extent along each ``spatial`` axis, e.g. ``"YX"`` or ``"ZYX"`` (None for contiguous data)."""
    if array.chunks is None:
        return None
    return tuple(array.chunks[array.axes.index(a)] for a in spatial)


def partial_path(path: Path) -> Path:
    """Where the output bound for ``path`` is written until it is complete."""
    return path.with_name(path.name + ".partial")


def create_output(path: Path, like: LargeArray, chunks: tuple[int, ...], resume: bool) -> LargeArray:
    """A float32 array of ``like``'s shape and axes at ``<path>.partial``, or the unfinished one to resume.

    Zarr and OME-Zarr inputs give Zarr (OME-Zarr) outputs with ``chunks``; TIFF
    inputs give a contiguous TIFF written through a memory map.
    """
    import zarr

    partial = partial_path(path)
    if like.kind == "tiff":
        import tifffile

        if resume and partial.is_file():
            data = tifffile.memmap(partial, mode="r+")
        else:
            data = tifffile.memmap(partial, shape=like.shape, dtype=np.float32, imagej=False,
                                   metadata={"axes": like.axes})
        return LargeArray(data, like.axes, partial, "tiff")
    if resume and partial.is_dir():
        node = zarr.open(str(partial), mode="r+")
        data = node["0"] if isinstance(node, zarr.Group) else node
        if tuple(data.chunks) != tuple(chunks):
            raise UserError(
                f"{partial.name} was written in chunks of {tuple(data.chunks)}, this run writes {tuple(chunks)};"
                " rerun with the same --tile, or delete it to start again"
            )
        return LargeArray(data, like.axes, partial, like.kind, tuple(chunks), like.ome, like.zarr_format)
    if partial.exists():
        shutil.rmtree(partial) if partial.is_dir() else partial.unlink()
    if like.kind == "ome-zarr":
        group = zarr.open_group(str(partial), mode="w", zarr_format=like.zarr_format)
        entry = {key: value for key, value in like.ome.items() if key != "datasets"}
        unit_scale = [{"type": "scale", "scale": [1.0] * len(like.axes)}]
        transforms = like.ome.get("datasets", [{}])[0].get("coordinateTransformations", unit_scale)
        entry["datasets"] = [{"path": "0", "coordinateTransformations": transforms}]
        group.attrs.update({"ome": {"version": "0.5", "multiscales": [entry]}} if like.zarr_format == 3
                           else {"multiscales": [entry]})
        data = group.create_array("0", shape=like.shape, chunks=chunks, dtype="float32", fill_value=np.nan)
    else:
        data = zarr.create_array(str(partial), shape=like.shape, chunks=chunks, dtype="float32",
                                 fill_value=np.nan, zarr_format=like.zarr_format)
    return LargeArray(data, like.axes, partial, like.kind, tuple(chunks), like.ome, like.zarr_format)


def finish_output(array: LargeArray, path: Path) -> Path:
    """Flush and move ``<path>.partial`` into place (replacing an older result)."""
    if hasattr(array.data, "flush"):
        array.data.flush()
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    os.replace(array.path, path)
    return path

