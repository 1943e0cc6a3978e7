"""Axes strings as bioimage users write them, and the sample views used inside.

An axes string names every dimension of an array with one of the letters
``S`` (sample), ``T`` (time), ``C`` (channel), ``Z``, ``Y`` and ``X``, in the
array's own order, e.g. ``"YX"``, ``"SYX"`` or ``"ZCYX"``.  Inside the package
2-D methods see a stack of samples ``(N, C, Y, X)`` where ``N`` flattens the
``S``, ``T`` and ``Z`` axes (in that order); 3-D methods see volumes
``(N, C, Z, Y, X)`` where ``N`` flattens ``S`` and ``T``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from bmz_cosdd.errors import UserError

VALID_AXES = "STCZYX"

# Per number of spatial dimensions: the axes flattened into N (in this order) and the spatial axes.
_SAMPLE_AXES = {2: "STZ", 3: "ST"}
_SPATIAL_AXES = {2: "YX", 3: "ZYX"}


def parse_axes(axes: str, ndim: int, source: str, shape: tuple[int, ...] | None = None) -> str:
    """Check an axes string against an array and return it upper-cased.

    Parameters
    ----------
    axes : str
        One letter per dimension, from ``VALID_AXES`` (case-insensitive).
    ndim : int
        Number of dimensions of the array the axes describe.
    source : str
        Name of the array's origin (usually a file name), used in error messages.
    shape : tuple of int, optional
        The array's shape, only to make the error message more helpful.

    Returns
    -------
    str
        The upper-cased axes string.

    Raises
    ------
    UserError
        If a letter is unknown or repeated, Y or X is missing, or the number of
        letters differs from ``ndim``.

    Examples
    --------
    >>> parse_axes("syx", 3, "cells.tif")
    'SYX'
    """
    parsed = str(axes).strip().upper()
    unknown = sorted({a for a in parsed if a not in VALID_AXES})
    if unknown:
        raise UserError(
            f"{source}: axes '{axes}' contain unknown letter(s) {', '.join(repr(u) for u in unknown)};"
            f" use letters from '{VALID_AXES}'"
        )
    repeated = sorted({a for a in parsed if parsed.count(a) > 1})
    if repeated:
        raise UserError(f"{source}: axes '{axes}' repeat the letter(s) {', '.join(repeated)}")
    missing = [a for a in "YX" if a not in parsed]
    if missing:
        raise UserError(f"{source}: axes '{axes}' must contain Y and X (missing {''.join(missing)})")
    if len(parsed) != ndim:
        shape_text = f" (shape {tuple(shape)})" if shape is not None else ""
        raise UserError(
            f"{source}: axes '{axes}' has {len(parsed)} letters but the array has {ndim} dimensions{shape_text}"
        )
    return parsed


def spatial_axes(spatial_dims: int) -> str:
    """The spatial axes of the sample view: ``"YX"`` for 2-D, ``"ZYX"`` for 3-D.

    Raises
    ------
    ValueError
        If ``spatial_dims`` is not 2 or 3.
    """
    if spatial_dims not in _SPATIAL_AXES:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return _SPATIAL_AXES[spatial_dims]


def _canonical(spatial_dims: int) -> str:
    """All axes in sample-view order: sample axes (flattened into N), C, spatial axes."""
    spatial = spatial_axes(spatial_dims)
    return _SAMPLE_AXES[spatial_dims] + "C" + spatial


def to_samples(array: np.ndarray, axes: str, spatial_dims: int = 2, *, source: str | None = None) -> np.ndarray:
    """Reshape an array with the given (parsed) axes to 2-D or 3-D samples.

    Parameters
    ----------
    array : numpy.ndarray
        Array whose dimensions are named by ``axes``.
    axes : str
        Parsed axes string (see :func:`parse_axes`), one letter per dimension.
    spatial_dims : {2, 3}, default 2
        2: ``(N, C, Y, X)`` with ``S``, ``T`` and ``Z`` flattened into ``N`` in
        that order. 3: ``(N, C, Z, Y, X)`` volumes with ``S`` then ``T``
        flattened into ``N``; ``axes`` must contain ``Z``.
    source : str, optional
        Name of the array's origin (usually a file name) for the error message.

    Returns
    -------
    numpy.ndarray
        ``(N, C, Y, X)`` or ``(N, C, Z, Y, X)``; ``C`` of size 1 when the input
        has no channel axis.

    Raises
    ------
    UserError
        If ``spatial_dims`` is 3 and ``axes`` have no ``Z``.

    Examples
    --------
    >>> to_samples(np.zeros((2, 5, 6, 3)), "SYXC").shape
    (2, 3, 5, 6)
    >>> to_samples(np.zeros((2, 4, 5, 6)), "TZYX", spatial_dims=3).shape
    (2, 1, 4, 5, 6)
    """
    spatial = spatial_axes(spatial_dims)
    if array.ndim != len(axes):
        raise ValueError(f"axes {axes!r} do not match an array of shape {array.shape}")
    if "Z" in spatial and "Z" not in axes:
        where = f"{source}: " if source else ""
        raise UserError(f"{where}axes '{axes}' have no Z axis; --spatial-dims 3 needs volumes (e.g. ZYX)")
    moved = np.transpose(array, [axes.index(a) for a in _canonical(spatial_dims) if a in axes])
    sizes = dict(zip(axes, array.shape))
    n = int(np.prod([sizes[a] for a in _SAMPLE_AXES[spatial_dims] if a in sizes], dtype=np.int64))
    return moved.reshape(n, sizes.get("C", 1), *(sizes[a] for a in spatial))


def to_samples_cyx(array: np.ndarray, axes: str) -> np.ndarray:
    """Reshape an array with the given (parsed) axes to ``(N, C, Y, X)``: ``to_samples(array, axes, 2)``.

    Examples
    --------
    >>> to_samples_cyx(np.zeros((2, 5, 6, 3)), "SYXC").shape
    (2, 3, 5, 6)
    """
    return to_samples(array, axes, 2)


def restore_axes(samples: np.ndarray, axes: str, shape: tuple[int, ...]) -> np.ndarray:
    """Undo :func:`to_samples`: give ``(N, C, Y, X)`` or ``(N, C, Z, Y, X)`` samples the input's own axes.

    Parameters
    ----------
    samples : numpy.ndarray
        Array of shape ``(N, C, Y, X)`` (2-D samples) or ``(N, C, Z, Y, X)``
        (volumes: ``Z`` is spatial), e.g. a prediction for every sample.
    axes : str
        Parsed axes string of the original array.
    shape : tuple of int
        Shape of the original array; its sample axes (``S``, ``T`` and, for 2-D
        samples, ``Z``) split ``N`` back apart, and its spatial sizes must
        match the samples.

    Returns
    -------
    numpy.ndarray
        Array with the dimensions in the order named by ``axes``. The channel
        size is taken from ``samples`` (so a prediction may have a different
        number of channels than the input when ``axes`` contains ``C``).

    Raises
    ------
    ValueError
        If the samples cannot be laid out with the given axes and shape.

    Examples
    --------
    >>> x = np.zeros((4, 6, 7, 2))
    >>> y = to_samples(x, "ZYXC")
    >>> restore_axes(y, "ZYXC", x.shape).shape
    (4, 6, 7, 2)
    >>> restore_axes(to_samples(x, "ZYXC", 3), "ZYXC", x.shape).shape
    (4, 6, 7, 2)
    """
    if samples.ndim not in (4, 5):
        raise ValueError(f"expected samples of shape (N, C, Y, X) or (N, C, Z, Y, X), got {samples.shape}")
    spatial_dims = samples.ndim - 2
    spatial = spatial_axes(spatial_dims)
    if len(shape) != len(axes):
        raise ValueError(f"axes {axes!r} do not match shape {tuple(shape)}")
    if any(a not in axes for a in spatial):
        raise ValueError(f"samples of shape {samples.shape} need axes with {spatial}, got {axes!r}")
    sizes = dict(zip(axes, shape))
    n, c = samples.shape[:2]
    got, want = tuple(samples.shape[2:]), tuple(sizes[a] for a in spatial)
    if got != want:
        raise ValueError(f"samples have {', '.join(spatial)} = {got} but the shape {tuple(shape)} has {want}")
    if "C" not in axes and c != 1:
        raise ValueError(f"samples have {c} channels but axes {axes!r} have no C axis")
    lead = {a: sizes[a] for a in _SAMPLE_AXES[spatial_dims] if a in sizes}
    if int(np.prod(list(lead.values()), dtype=np.int64)) != n:
        raise ValueError(f"{n} samples cannot be split into {lead}")
    canonical = [a for a in _canonical(spatial_dims) if a in axes]
    if "C" not in axes:
        samples = samples[:, 0]
    full = {**sizes, "C": c}
    unflat = samples.reshape([full[a] for a in canonical])
    # Output dimension i holds the user's axis axes[i]; find it in canonical order.
    return np.transpose(unflat, [canonical.index(a) for a in axes])


def per_axis(value: int | Sequence[int], n_spatial: int) -> tuple[int, ...]:
    """A size, step or halo as one int per spatial axis (an int applies to every axis).

    Examples
    --------
    >>> per_axis(8, 3), per_axis((1, 8, 8), 3)
    ((8, 8, 8), (1, 8, 8))

    Raises
    ------
    ValueError
        If a sequence does not hold exactly ``n_spatial`` values.
    """
    if isinstance(value, (int, np.integer)):
        return (int(value),) * n_spatial
    values = tuple(int(v) for v in value)
    if len(values) != n_spatial:
        raise ValueError(f"expected 1 or {n_spatial} values (one per spatial axis), got {values}")
    return values


def per_axis_text(values: Sequence[int]) -> str:
    """Per-axis sizes for a sentence: ``16`` when every axis agrees, else ``z 4, y 16, x 16``.

    Examples
    --------
    >>> per_axis_text((16, 16)), per_axis_text((4, 16, 16))
    ('16', 'z 4, y 16, x 16')
    """
    values = [int(v) for v in values]
    if len(set(values)) == 1:
        return str(values[0])
    return ", ".join(f"{axis} {value}" for axis, value in zip("zyx"[3 - len(values):], values))
