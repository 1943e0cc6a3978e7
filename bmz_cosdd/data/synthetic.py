"""Seeded synthetic microscopy images and noise recipes for demos, tests and benchmarks.

Clean images are float64 in [0, 1] with structure at several scales. Noise
recipes take a clean array (any leading dimensions, the last two being Y and
X) and a ``numpy.random.Generator`` and return the noisy float64 array; their
spatially correlated parts run along x (rows, the last axis) or y (columns).

Examples
--------
>>> data = make_dataset("blobs", "row_correlated", n=2, shape=(64, 64), seed=1)
>>> data.noisy.shape, data.noisy.dtype, data.direction
((2, 64, 64), dtype('float32'), 'x')
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bmz_cosdd.errors import UserError

# ----------------------------------------------------------------------------- filters


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(4.0 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _convolve_valid(x: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """'Valid' 1-D convolution along ``axis`` as a sum of shifted slices (short kernels)."""
    x = np.moveaxis(x, axis, -1)
    n_out = x.shape[-1] - len(kernel) + 1
    out = np.zeros(x.shape[:-1] + (n_out,), dtype=np.float64)
    for i, w in enumerate(kernel):
        out += w * x[..., i : i + n_out]
    return np.moveaxis(out, -1, axis)


def _blur2d(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of the last two axes, zero outside the image."""
    k = _gaussian_kernel(sigma)
    r = len(k) // 2
    pad = [(0, 0)] * (img.ndim - 2) + [(r, r), (r, r)]
    padded = np.pad(img, pad)
    return _convolve_valid(_convolve_valid(padded, k, -1), k, -2)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Periodic Gaussian-filtered white noise with zero mean and unit std."""
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    transfer = np.exp(-2.0 * math.pi**2 * sigma**2 * (fy**2 + fx**2))
    field_ = np.fft.irfft2(np.fft.rfft2(white) * transfer, s=shape)
    field_ -= field_.mean()
    std = field_.std()
    return field_ / std if std > 0 else field_


# ----------------------------------------------------------------------------- clean images


def _local_coords(
    shape: tuple[int, int], cy: float, cx: float, radius: float
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """Bounding box around (cy, cx) and the pixel offsets from the centre inside it."""
    y0, y1 = max(0, int(cy - radius)), min(shape[0], int(cy + radius) + 2)
    x0, x1 = max(0, int(cx - radius)), min(shape[1], int(cx + radius) + 2)
    if y0 >= y1 or x0 >= x1:
        return None
    dy = np.arange(y0, y1, dtype=np.float64)[:, None] - cy
    dx = np.arange(x0, x1, dtype=np.float64)[None, :] - cx
    return (slice(y0, y1), slice(x0, x1)), dy, dx


def _elliptic_radius(dy: np.ndarray, dx: np.ndarray, a: float, b: float, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    u = c * dx + s * dy
    v = -s * dx + c * dy
    return np.sqrt((u / a) ** 2 + (v / b) ** 2)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def _cells(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Ellipses with smooth textured interiors, bright rims and nuclei."""
    area = shape[0] * shape[1]
    img = 0.15 * (1.0 + 0.5 * _smooth_field(rng, shape, 40.0))  # uneven background
    texture = 1.0 + 0.25 * _smooth_field(rng, shape, 3.0)
    fine = 1.0 + 0.2 * _smooth_field(rng, shape, 1.2)
    n_cells = int(rng.integers(max(2, area // 3000), max(3, area // 1500) + 1))
    for _ in range(n_cells):
        a = rng.uniform(8.0, 26.0)
        b = a * rng.uniform(0.55, 1.0)
        angle = rng.uniform(0.0, math.pi)
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        box = _local_coords(shape, cy, cx, a + 4.0)
        if box is None:
            continue
        region, dy, dx = box
        r = _elliptic_radius(dy, dx, a, b, angle)
        body = _sigmoid((1.0 - r) * b / 1.0) * rng.uniform(0.2, 0.5)
        rim = np.exp(-0.5 * ((r - 1.0) * b / 1.2) ** 2) * rng.uniform(0.2, 0.5)
        # Nucleus: a smaller ellipse off-centre inside the cell.
        na, nb = a * rng.uniform(0.3, 0.5), b * rng.uniform(0.3, 0.5)
        off = rng.uniform(-0.25, 0.25, size=2) * b
        rn = _elliptic_radius(dy - off[0], dx - off[1], na, nb, angle + rng.uniform(-0.5, 0.5))
        nucleus = _sigmoid((1.0 - rn) * nb / 0.8) * rng.uniform(0.3, 0.7)
        img[region] += body * texture[region] + rim + nucleus * fine[region]
    return img


def _filaments(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Smooth random curves with Gaussian cross-section of varying width and intensity."""
    height, width = shape
    size = max(height, width)
    widths = (0.8, 1.4, 2.4)
    layers = [np.zeros(height * width) for _ in widths]
    step = 0.5
    n_fil = int(rng.integers(max(3, size // 32), max(4, size // 14) + 1))
    for _ in range(n_fil):
        n_pts = int(rng.uniform(0.4, 1.2) * size / step)
        t = np.arange(n_pts) * step
        # Heading: a base direction plus two slow oscillations -> smooth bends.
        heading = rng.uniform(0, 2 * math.pi) + sum(
            rng.uniform(0.2, 1.0) * np.sin(2 * math.pi * t / rng.uniform(40.0, 200.0) + rng.uniform(0, 2 * math.pi))
            for _ in range(2)
        )
        py = rng.uniform(0, height) + np.cumsum(step * np.sin(heading))
        px = rng.uniform(0, width) + np.cumsum(step * np.cos(heading))
        k = int(rng.integers(len(widths)))
        sigma = widths[k]
        along = 0.65 + 0.35 * np.sin(2 * math.pi * t / rng.uniform(30.0, 120.0) + rng.uniform(0, 2 * math.pi))
        # Weight per point so that the blurred line peaks at about the intensity.
        weight = rng.uniform(0.3, 1.0) * along * step * math.sqrt(2 * math.pi) * sigma
        inside = (py >= 0) & (py < height - 1) & (px >= 0) & (px < width - 1)
        py, px, weight = py[inside], px[inside], weight[inside]
        iy, ix = np.floor(py).astype(np.int64), np.floor(px).astype(np.int64)
        fy, fx = py - iy, px - ix
        base = iy * width + ix
        for offset, w in (
            (0, (1 - fy) * (1 - fx)),
            (1, (1 - fy) * fx),
            (width, fy * (1 - fx)),
            (width + 1, fy * fx),
        ):
            layers[k] += np.bincount(base + offset, weights=weight * w, minlength=height * width)
    img = np.zeros(shape)
    for layer, sigma in zip(layers, widths):
        if layer.any():
            img += _blur2d(layer.reshape(shape), sigma)
    return img + 0.05 * (1.0 + 0.5 * _smooth_field(rng, shape, 30.0))


def _blobs(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Sums of anisotropic Gaussians over a range of scales."""
    area = shape[0] * shape[1]
    img = np.zeros(shape)
    n_blobs = int(rng.integers(max(3, area // 1500), max(4, area // 800) + 1))
    for _ in range(n_blobs):
        s_major = math.exp(rng.uniform(math.log(2.0), math.log(20.0)))
        s_minor = s_major * rng.uniform(0.3, 1.0)
        angle = rng.uniform(0.0, math.pi)
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        box = _local_coords(shape, cy, cx, 3.5 * s_major)
        if box is None:
            continue
        region, dy, dx = box
        r = _elliptic_radius(dy, dx, s_major, s_minor, angle)
        img[region] += rng.uniform(0.2, 1.0) * np.exp(-0.5 * r**2)
    return img


def _blobs_3d(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """Volumes: sums of axis-aligned 3-D Gaussians over a range of scales (separable, so cheap)."""
    volume = np.zeros(shape)
    grids = [np.arange(n, dtype=np.float64) for n in shape]
    n_blobs = int(rng.integers(max(3, volume.size // 20000), max(4, volume.size // 8000) + 1))
    for _ in range(n_blobs):
        scale = math.exp(rng.uniform(math.log(1.5), math.log(8.0)))
        profiles = [
            np.exp(-0.5 * ((grid - rng.uniform(0, n)) / (scale * rng.uniform(0.5, 1.0))) ** 2)
            for grid, n in zip(grids, shape)
        ]
        volume += rng.uniform(0.2, 1.0) * profiles[0][:, None, None] * profiles[1][None, :, None] * profiles[2]
    return volume


def _scale_unit(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Map to [0, 1] with a small background level; the brightest 0.1 % saturate at 1."""
    lo = img.min()
    hi = np.partition(img.ravel(), int(0.999 * (img.size - 1)))[int(0.999 * (img.size - 1))]
    if hi <= lo:
        hi = img.max() if img.max() > lo else lo + 1.0
    background = rng.uniform(0.03, 0.1)
    return np.clip(background + (1.0 - background) * (img - lo) / (hi - lo), 0.0, 1.0)


def _mixed(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Cells and filaments over a faint blob background."""
    parts = [_blobs(rng, shape), _cells(rng, shape), _filaments(rng, shape)]
    weights = rng.dirichlet((2.0, 3.0, 3.0)) + np.array([0.1, 0.3, 0.3])
    return sum(w * p / max(p.max(), 1e-12) for w, p in zip(weights, parts))


_KINDS: dict[str, Callable[[np.random.Generator, tuple[int, int]], np.ndarray]] = {
    "cells": _cells,
    "filaments": _filaments,
    "blobs": _blobs,
    "mixed": _mixed,
}


def make_clean(kind: str, n: int, shape: tuple[int, ...] = (256, 256), seed: int = 0) -> np.ndarray:
    """Generate clean synthetic microscopy images (or, for ``blobs``, volumes).

    Parameters
    ----------
    kind : {"cells", "filaments", "blobs", "mixed"}
        ``cells``: ellipses with smooth textured interiors, bright rims and
        nuclei; ``filaments``: smooth random curves with Gaussian cross-section
        of varying width and intensity; ``blobs``: sums of anisotropic
        Gaussians; ``mixed``: cells and filaments over blobs.
    n : int
        Number of images.
    shape : tuple of int, default (256, 256)
        Image size (Y, X), or volume size (Z, Y, X) for ``blobs``.
    seed : int, default 0
        Seed; image ``i`` depends only on ``(kind, seed, i, shape)``, so the
        first images of a larger set equal a smaller set's.

    Returns
    -------
    numpy.ndarray
        float64 array of shape ``(n, Y, X)`` or ``(n, Z, Y, X)`` with values in [0, 1].

    Raises
    ------
    UserError
        For an unknown kind or invalid size.
    """
    if kind not in _KINDS:
        raise UserError(f"unknown synthetic image kind '{kind}'; valid kinds: {', '.join(_KINDS)}")
    shape = tuple(int(side) for side in shape)
    if len(shape) == 3 and kind != "blobs":
        raise UserError(f"synthetic volumes (Z, Y, X) come in the kind 'blobs' only, not '{kind}'")
    if len(shape) not in (2, 3) or n < 1 or min(shape) < 8:
        raise UserError(f"synthetic images need n >= 1 and a shape of at least 8 x 8 (x 8), got n={n}, shape={shape}")
    kind_id = list(_KINDS).index(kind)
    generate = _blobs_3d if len(shape) == 3 else _KINDS[kind]
    out = np.empty((n,) + shape, dtype=np.float64)
    for i in range(n):
        rng = np.random.default_rng([int(seed), i, kind_id])
        out[i] = _scale_unit(generate(rng, shape), rng)
    return out


# ----------------------------------------------------------------------------- noise recipes


def _signal(clean: np.ndarray) -> np.ndarray:
    s = np.asarray(clean, dtype=np.float64)
    if s.ndim < 2:
        raise ValueError(f"clean images need at least 2 dimensions (Y, X), got shape {s.shape}")
    return np.clip(s, 0.0, None)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def _poisson(rng: np.random.Generator, s: np.ndarray, photons: float) -> np.ndarray:
    return rng.poisson(s * photons).astype(np.float64) / photons


def poisson_gaussian(
    clean: np.ndarray, rng: np.random.Generator, photons: float = 50.0, read_sigma: float = 0.02
) -> np.ndarray:
    """Signal-dependent, pixel-independent noise: ``Poisson(photons * s) / photons + N(0, read_sigma^2)``.

    The variance is ``s / photons + read_sigma^2``, increasing with the signal.
    """
    _require(
        photons > 0 and read_sigma >= 0,
        f"poisson_gaussian needs photons > 0 and read_sigma >= 0, got {photons}, {read_sigma}",
    )
    s = _signal(clean)
    return _poisson(rng, s, photons) + rng.normal(0.0, read_sigma, s.shape)


def _blurred_white(
    rng: np.random.Generator, shape: tuple[int, ...], sigma: float, blur: float, axis: int
) -> np.ndarray:
    """White N(0, sigma^2) noise blurred along ``axis`` by a Gaussian (no edge effects)."""
    if blur <= 0:
        return rng.normal(0.0, sigma, shape)
    k = _gaussian_kernel(blur)
    padded = list(shape)
    padded[axis] += len(k) - 1
    return _convolve_valid(rng.normal(0.0, sigma, tuple(padded)), k, axis)


def row_correlated(
    clean: np.ndarray,
    rng: np.random.Generator,
    gain: float = 0.002,
    read_sigma: float = 0.02,
    stripe_sigma: float = 0.025,
    blur_sigma: float = 1.0,
) -> np.ndarray:
    """Row-correlated noise, the FFHQ-Stripe recipe of COSDD's paper.

    ``x = gain * Poisson(s / gain) + N(0, read_sigma^2) + blur_x(N(0, stripe_sigma^2))``:
    signal-dependent shot noise, white read noise, and white noise of std
    ``stripe_sigma`` blurred along x (the last axis) by a Gaussian of std
    ``blur_sigma`` px, which correlates neighbouring pixels of a row. The
    blurring lowers that component's std (to about ``0.53 * stripe_sigma`` for
    ``blur_sigma=1``); raise ``stripe_sigma`` for stronger and ``blur_sigma``
    for longer correlations. ``blur_sigma=0`` gives white noise.
    """
    _require(
        gain > 0 and read_sigma >= 0 and stripe_sigma >= 0 and blur_sigma >= 0,
        f"row_correlated needs gain > 0 and non-negative sigmas, got gain={gain}, read_sigma={read_sigma},"
        f" stripe_sigma={stripe_sigma}, blur_sigma={blur_sigma}",
    )
    s = _signal(clean)
    stripes = _blurred_white(rng, s.shape, stripe_sigma, blur_sigma, axis=-1)
    return _poisson(rng, s, 1.0 / gain) + rng.normal(0.0, read_sigma, s.shape) + stripes


def column_checkerboard(
    clean: np.ndarray,
    rng: np.random.Generator,
    variance_scale: float = 0.15,
    grey_levels: float = 255.0,
    s_floor: float = 1.0 / 255.0,
    amplitude: float = 0.1,
    period: int = 4,
) -> np.ndarray:
    """Inverse-signal-dependent noise plus a column pattern, the FFHQ-Checkerboard recipe.

    The paper writes the Gaussian part as ``N(0, 0.15 / s)``. We read the second
    argument as a variance (as in the paper's other recipes) and ``s`` as the
    signal in grey levels of an 8-bit image (FFHQ's format), with the noise in
    the [0, 1] units of ``clean``::

        variance = variance_scale / (grey_levels * max(s, s_floor))

    so darker pixels are noisier, and the floor (one grey level by default)
    bounds the variance by ``variance_scale`` where the signal is zero. This
    gives moderate noise (std about 0.05 at s = 0.25), consistent with the
    paper's results (36.3 dB for COSDD, 19.1 dB for StructN2V, i.e. about what
    the +-0.1 pattern alone costs). ``grey_levels=1`` gives the literal reading
    with ``s`` in [0, 1], whose noise (std about 0.8 at s = 0.25) swamps the image.

    The pattern runs along y (columns): ``-amplitude`` for ``period / 2``
    pixels, then ``+amplitude`` for ``period / 2`` pixels (-0.1, -0.1, +0.1, +0.1
    by default), with a random phase for each column of each image. For
    ``period=4`` its lag-1 autocorrelation is zero; it shows at lag 2 (-1).
    """
    _require(
        variance_scale >= 0 and grey_levels > 0 and s_floor > 0 and period >= 2 and period % 2 == 0,
        f"column_checkerboard needs variance_scale >= 0, grey_levels > 0, s_floor > 0 and an even period >= 2,"
        f" got {variance_scale}, {grey_levels}, {s_floor}, {period}",
    )
    s = _signal(clean)
    std = np.sqrt(variance_scale / (grey_levels * np.maximum(s, s_floor)))
    noise = rng.standard_normal(s.shape) * std
    phase = rng.integers(0, period, size=s.shape[:-2] + (1, s.shape[-1]))
    rows = np.arange(s.shape[-2])[:, None]
    pattern = np.where((rows + phase) % period < period // 2, -amplitude, amplitude)
    return s + noise + pattern


def scmos_columns(
    clean: np.ndarray,
    rng: np.random.Generator,
    photons: float = 50.0,
    read_sigma: float = 0.02,
    column_sigma: float = 0.05,
    gain_sigma: float = 0.0,
) -> np.ndarray:
    """sCMOS-like noise: Poisson-Gaussian plus a random offset for each column.

    ``x = g * Poisson(photons * s) / photons + N(0, read_sigma^2) + o``, where the
    column offset ``o ~ N(0, column_sigma^2)`` is the same for every pixel of a
    column (so the noise is correlated along y) and the optional column gain is
    ``g ~ 1 + N(0, gain_sigma^2)``. Offsets and gains are drawn afresh for each
    2-D image, so they are noise with zero mean over images rather than a fixed
    pattern that a denoiser would have to treat as signal.
    """
    _require(
        photons > 0 and read_sigma >= 0 and column_sigma >= 0 and gain_sigma >= 0,
        f"scmos_columns needs photons > 0 and non-negative sigmas, got photons={photons},"
        f" read_sigma={read_sigma}, column_sigma={column_sigma}, gain_sigma={gain_sigma}",
    )
    s = _signal(clean)
    column_shape = s.shape[:-2] + (1, s.shape[-1])
    offsets = rng.normal(0.0, column_sigma, column_shape)
    gains = 1.0 + rng.normal(0.0, gain_sigma, column_shape) if gain_sigma > 0 else 1.0
    return gains * _poisson(rng, s, photons) + rng.normal(0.0, read_sigma, s.shape) + offsets


NOISE_RECIPES: dict[str, Callable[..., np.ndarray]] = {
    "poisson_gaussian": poisson_gaussian,
    "row_correlated": row_correlated,
    "column_checkerboard": column_checkerboard,
    "scmos_columns": scmos_columns,
}

NOISE_DIRECTIONS: dict[str, str | None] = {
    "poisson_gaussian": None,
    "row_correlated": "x",
    "column_checkerboard": "y",
    "scmos_columns": "y",
}


@dataclass
class SyntheticData:
    """A synthetic dataset with its ground truth.

    Attributes
    ----------
    clean : numpy.ndarray
        ``(n, Y, X)`` float64 in [0, 1].
    noisy : numpy.ndarray
        ``(n, Y, X)`` float32.
    noise : str
        Name of the noise recipe.
    direction : str or None
        Axis of the noise correlation ("x", "y") or None for pixel-independent noise.
    seed : int
        Seed of the clean images and the noise.
    params : dict
        All parameters of the noise recipe, defaults included.
    """

    clean: np.ndarray
    noisy: np.ndarray
    noise: str
    direction: str | None
    seed: int
    params: dict[str, Any] = field(default_factory=dict)


def make_dataset(
    kind: str = "mixed",
    noise: str = "row_correlated",
    n: int = 8,
    shape: tuple[int, ...] = (256, 256),
    seed: int = 0,
    **noise_params: Any,
) -> SyntheticData:
    """Generate clean images and their noisy observations.

    Parameters
    ----------
    kind : str, default "mixed"
        Clean image kind, see :func:`make_clean`.
    noise : str, default "row_correlated"
        One of ``NOISE_RECIPES``.
    n : int, default 8
        Number of images.
    shape : tuple of int, default (256, 256)
        Image size (Y, X), or volume size (Z, Y, X) with ``kind="blobs"``; the noise
        recipes act along the last axes (x is always the last).
    seed : int, default 0
        Same seed, same arrays.
    **noise_params
        Parameters of the noise recipe (see its docstring).

    Returns
    -------
    SyntheticData

    Raises
    ------
    UserError
        For an unknown kind, noise or noise parameter.
    """
    if noise not in NOISE_RECIPES:
        raise UserError(f"unknown noise '{noise}'; valid noises: {', '.join(NOISE_RECIPES)}")
    recipe = NOISE_RECIPES[noise]
    defaults = {
        name: p.default
        for name, p in inspect.signature(recipe).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    unknown = sorted(set(noise_params) - set(defaults))
    if unknown:
        raise UserError(f"unknown parameter(s) {', '.join(unknown)} for noise '{noise}'; valid: {', '.join(defaults)}")
    params = {**defaults, **noise_params}
    clean = make_clean(kind, n, shape, seed)
    # A stream separate from the clean images', so changing the noise keeps the images.
    rng = np.random.default_rng([int(seed), 0x6E6F6973])
    noisy = recipe(clean, rng, **params).astype(np.float32)
    return SyntheticData(
        clean=clean, noisy=noisy, noise=noise, direction=NOISE_DIRECTIONS[noise], seed=int(seed), params=params
    )


# ----------------------------------------------------------------------------- filament volumes


def _blur3d(volume: np.ndarray, sigma: float) -> np.ndarray:
    """Separable isotropic Gaussian blur of a (Z, Y, X) volume, zero outside it."""
    k = _gaussian_kernel(sigma)
    r = len(k) // 2
    out = np.pad(volume, r)
    for axis in range(3):
        out = _convolve_valid(out, k, axis)
    return out


def _bends(rng: np.random.Generator, t: np.ndarray, amplitude: float) -> np.ndarray:
    """Two slow sinusoids of random period and phase, each up to ``amplitude`` (radians)."""
    return sum(
        rng.uniform(0.25, 1.0) * amplitude * np.sin(2 * math.pi * t / rng.uniform(40.0, 200.0) + rng.uniform(0, 2 * math.pi))
        for _ in range(2)
    )


def _filaments_3d(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """Smooth random 3-D curves with a Gaussian cross-section of varying width and intensity."""
    size = max(shape)
    widths = (0.8, 1.4, 2.4)
    layers = [np.zeros(int(np.prod(shape))) for _ in widths]
    step = 0.5
    strides = (shape[1] * shape[2], shape[2], 1)
    n_fil = int(rng.integers(max(4, size // 4), max(5, size // 2) + 1))
    for _ in range(n_fil):
        n_pts = int(rng.uniform(0.5, 1.5) * size / step)
        t = np.arange(n_pts) * step
        # Angle of the heading to z and its azimuth in the y/x plane: a base direction plus slow
        # oscillations -> smooth bends. Filaments run mostly along the y/x plane (as in a cell spread
        # on a coverslip): the base is within 15 degrees of it and the bends tilt it by 20 at most.
        polar = math.pi / 2 + rng.uniform(-0.25, 0.25) + _bends(rng, t, 0.17)
        azimuth = rng.uniform(0, 2 * math.pi) + _bends(rng, t, 0.8)
        heading = np.stack([np.cos(polar), np.sin(polar) * np.sin(azimuth), np.sin(polar) * np.cos(azimuth)])
        points = np.array([rng.uniform(0, n) for n in shape])[:, None] + np.cumsum(step * heading, axis=1)
        k = int(rng.integers(len(widths)))
        sigma = widths[k]
        along = 0.65 + 0.35 * np.sin(2 * math.pi * t / rng.uniform(30.0, 120.0) + rng.uniform(0, 2 * math.pi))
        # Weight per point so that the blurred line peaks at about the intensity (2-D Gaussian cross-section).
        weight = rng.uniform(0.3, 1.0) * along * step * 2 * math.pi * sigma**2
        inside = np.all((points >= 0) & (points < np.array(shape)[:, None] - 1), axis=0)
        points, weight = points[:, inside], weight[inside]
        corner = np.floor(points).astype(np.int64)
        frac = points - corner
        base = sum(c * s for c, s in zip(corner, strides))
        for dz in (0, 1):
            for dy in (0, 1):
                for dx in (0, 1):
                    w = weight.copy()
                    for d, f in zip((dz, dy, dx), frac):
                        w *= f if d else 1 - f
                    offset = dz * strides[0] + dy * strides[1] + dx
                    layers[k] += np.bincount(base + offset, weights=w, minlength=len(layers[k]))
    volume = np.zeros(shape)
    for layer, sigma in zip(layers, widths):
        if layer.any():
            volume += _blur3d(layer.reshape(shape), sigma)
    return volume


def make_filament_volumes(n: int, shape: tuple[int, int, int] = (64, 64, 64), seed: int = 0) -> np.ndarray:
    """Generate clean synthetic volumes: 3-D filaments over a faint background of 3-D blobs.

    The voxels are isotropic (filaments bend freely in z, y and x); blur and sub-sample the
    result along z to imitate an anisotropic microscope (an axial PSF and a z step larger than
    the pixel size).

    Parameters
    ----------
    n : int
        Number of volumes.
    shape : tuple of int, default (64, 64, 64)
        Volume size (Z, Y, X).
    seed : int, default 0
        Seed; volume ``i`` depends only on ``(seed, i, shape)``.

    Returns
    -------
    numpy.ndarray
        float64 array of shape ``(n, Z, Y, X)`` with values in [0, 1].

    Raises
    ------
    UserError
        For an invalid number or size.

    Examples
    --------
    >>> make_filament_volumes(2, (16, 32, 32), seed=1).shape
    (2, 16, 32, 32)
    """
    shape = tuple(int(side) for side in shape)
    if len(shape) != 3 or n < 1 or min(shape) < 8:
        raise UserError(f"filament volumes need n >= 1 and a shape (Z, Y, X) of at least 8 x 8 x 8, got n={n}, shape={shape}")
    out = np.empty((n,) + shape, dtype=np.float64)
    for i in range(n):
        rng = np.random.default_rng([int(seed), i, 0x66696C33])
        filaments, blobs = _filaments_3d(rng, shape), _blobs_3d(rng, shape)
        volume = filaments / max(filaments.max(), 1e-12) + 0.3 * blobs / max(blobs.max(), 1e-12)
        out[i] = _scale_unit(volume, rng)
    return out
