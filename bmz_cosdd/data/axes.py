"""Axes strings as bioimage users write them, and the (N, C, Y, X) view used inside.

An axes string names every dimension of an array with one of the letters
``S`` (sample), ``T`` (time), ``C`` (channel), ``Z``, ``Y`` and ``X``, in the
array's own order, e.g. ``"YX"``, ``"SYX"`` or ``"ZCYX"``.  Inside the package
2-D methods see a stack of samples ``(N, C, Y, X)`` where ``N`` flattens the
``S``, ``T`` and ``Z`` axes (in that order).
"""

from __future__ import annotations

import numpy as np

from bmz_cosdd.errors import UserError

VALID_AXES = "STCZYX"

# Order of the axes in the (N, C, Y, X) view: S, T and Z flatten into N.
_SAMPLE_AXES = "STZ"
_CANONICAL = "STZCYX"


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


def _permutation(axes: str) -> list[int]:
    """Indices that reorder ``axes`` into canonical S, T, Z, C, Y, X order."""
    return [axes.index(a) for a in _CANONICAL if a in axes]


def to_samples_cyx(array: np.ndarray, axes: str) -> np.ndarray:
    """Reshape an array with the given (parsed) axes to ``(N, C, Y, X)``.

    Parameters
    ----------
    array : numpy.ndarray
        Array whose dimensions are named by ``axes``.
    axes : str
        Parsed axes string (see :func:`parse_axes`), one letter per dimension.

    Returns
    -------
    numpy.ndarray
        Array of shape ``(N, C, Y, X)``: ``S``, ``T`` and ``Z`` flattened into ``N``
        in that order, ``C`` of size 1 when the input has no channel axis.

    Examples
    --------
    >>> to_samples_cyx(np.zeros((2, 5, 6, 3)), "SYXC").shape
    (2, 3, 5, 6)
    """
    if array.ndim != len(axes):
        raise ValueError(f"axes {axes!r} do not match an array of shape {array.shape}")
    moved = np.transpose(array, _permutation(axes))
    sizes = dict(zip(axes, array.shape))
    n = int(np.prod([sizes[a] for a in _SAMPLE_AXES if a in sizes], dtype=np.int64))
    return moved.reshape(n, sizes.get("C", 1), sizes["Y"], sizes["X"])


def restore_axes(samples: np.ndarray, axes: str, shape: tuple[int, ...]) -> np.ndarray:
    """Undo :func:`to_samples_cyx`: give ``(N, C, Y, X)`` samples the input's own axes.

    Parameters
    ----------
    samples : numpy.ndarray
        Array of shape ``(N, C, Y, X)``, e.g. a prediction for every sample.
    axes : str
        Parsed axes string of the original array.
    shape : tuple of int
        Shape of the original array; its ``S``, ``T`` and ``Z`` sizes split ``N``
        back apart, and its ``Y`` and ``X`` sizes must match the samples.

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
    >>> y = to_samples_cyx(x, "ZYXC")
    >>> restore_axes(y, "ZYXC", x.shape).shape
    (4, 6, 7, 2)
    """
    if samples.ndim != 4:
        raise ValueError(f"expected samples of shape (N, C, Y, X), got {samples.shape}")
    if len(shape) != len(axes):
        raise ValueError(f"axes {axes!r} do not match shape {tuple(shape)}")
    sizes = dict(zip(axes, shape))
    n, c, y, x = samples.shape
    if (y, x) != (sizes["Y"], sizes["X"]):
        raise ValueError(f"samples have Y, X = {(y, x)} but the shape {tuple(shape)} has {(sizes['Y'], sizes['X'])}")
    if "C" not in axes and c != 1:
        raise ValueError(f"samples have {c} channels but axes {axes!r} have no C axis")
    lead = [sizes[a] for a in _SAMPLE_AXES if a in sizes]
    if int(np.prod(lead, dtype=np.int64)) != n:
        raise ValueError(f"{n} samples cannot be split into {dict((a, sizes[a]) for a in _SAMPLE_AXES if a in sizes)}")
    canonical = [a for a in _CANONICAL if a in axes]
    if "C" not in axes:
        samples = samples[:, 0]
    full = {**sizes, "C": c}
    unflat = samples.reshape([full[a] for a in canonical])
    # Output dimension i holds the user's axis axes[i]; find it in canonical order.
    return np.transpose(unflat, [canonical.index(a) for a in axes])
