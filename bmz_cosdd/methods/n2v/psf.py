"""Point spread functions for PSF-N2V: Gaussian and measured PSFs, and a convolution layer.

PSF-N2V convolves the network's prediction with the microscope's PSF before the
loss, so the network learns the deconvolved image. The PSF is an odd-sized 2-D
float array that sums to one and whose centre pixel is its centroid, so that the
convolution does not shift the image.

This module is also bundled into exported model packages and compiled with
``torch.jit.script``; it therefore avoids ``from __future__ import annotations``
and imports only torch, numpy and the standard library at module level.
"""

import math
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PSFConvolution", "gaussian_psf", "prepare_psf", "read_psf"]


def prepare_psf(kernel: np.ndarray) -> np.ndarray:
    """Check a 2-D PSF and normalise it to sum one.

    Parameters
    ----------
    kernel : numpy.ndarray
        2-D array with odd height and width, finite and non-negative values
        and a positive sum. Its centre pixel is taken as the PSF's origin.

    Returns
    -------
    numpy.ndarray
        float64 copy of ``kernel`` divided by its sum.

    Raises
    ------
    UserError
        If the array is not 2-D, has an even dimension, or has non-finite,
        negative or all-zero values.
    """
    from bmz_cosdd.errors import UserError

    k = np.array(kernel, dtype=np.float64)
    if k.ndim != 2:
        raise UserError(f"PSF must be 2-D, got shape {k.shape}")
    if k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise UserError(f"PSF must have odd height and width, got shape {k.shape}")
    if not np.all(np.isfinite(k)):
        raise UserError("PSF contains NaN or infinite values")
    if np.any(k < 0):
        raise UserError("PSF contains negative values")
    total = float(k.sum())
    if total <= 0:
        raise UserError("PSF sums to zero")
    return k / total


def gaussian_psf(sigma: float, size: Optional[int] = None) -> np.ndarray:
    """An isotropic 2-D Gaussian PSF.

    Parameters
    ----------
    sigma : float
        Standard deviation in pixels, > 0.
    size : int, optional
        Odd height and width of the array; default ``2 * ceil(4 * sigma) + 1``,
        at least 3.

    Returns
    -------
    numpy.ndarray
        float64 array of shape ``(size, size)`` that sums to one and peaks at
        the central pixel.

    Raises
    ------
    UserError
        If ``sigma`` is not a finite positive number or ``size`` is not a
        positive odd integer.
    """
    from bmz_cosdd.errors import UserError

    try:
        s = float(sigma)
    except (TypeError, ValueError):
        raise UserError(f"PSF sigma must be a number, got {sigma!r}") from None
    if not math.isfinite(s) or s <= 0:
        raise UserError(f"PSF sigma must be a finite number > 0, got {sigma}")
    if size is None:
        n = max(3, 2 * int(math.ceil(4.0 * s)) + 1)
    else:
        try:
            n = int(size)
        except (TypeError, ValueError):
            raise UserError(f"PSF size must be an integer, got {size!r}") from None
        if isinstance(size, bool) or n != size:
            raise UserError(f"PSF size must be an integer, got {size!r}")
        if n < 1 or n % 2 == 0:
            raise UserError(f"PSF size must be a positive odd integer, got {n}")
    t = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    g = np.exp(-0.5 * (t / s) ** 2)
    return prepare_psf(np.outer(g, g))


def _load_array(path: Path) -> np.ndarray:
    from bmz_cosdd.errors import UserError

    suffix = path.suffix.lower()
    if suffix not in (".npy", ".tif", ".tiff"):
        raise UserError(f"PSF file {path} must be a .tif, .tiff or .npy file")
    if not path.is_file():
        raise UserError(f"PSF file {path} not found")
    try:
        if suffix == ".npy":
            return np.asarray(np.load(path, allow_pickle=False))
        import tifffile

        return np.asarray(tifffile.imread(path))
    except Exception as exc:  # any reader failure is the file's fault
        detail = " ".join(str(exc).split())
        raise UserError(f"could not read PSF file {path}: {detail}") from None


def read_psf(path: Union[str, Path]) -> np.ndarray:
    """Read a measured PSF from a TIFF or ``.npy`` file, centred and normalised.

    Singleton axes are dropped; the rest must be 2-D. Negative values (e.g.
    from background subtraction) are clipped to zero. The PSF is then padded
    with zeros into a square array of odd size whose central pixel is the
    PSF's centroid (its intensity-weighted centre, rounded to the nearest
    pixel), so that convolving with it does not shift the image, and divided
    by its sum. Subtract the background before saving a measured PSF: a
    background offset pulls the centroid towards the middle of the array.

    Parameters
    ----------
    path : str or pathlib.Path
        A ``.tif``/``.tiff`` (read with tifffile) or ``.npy`` file.

    Returns
    -------
    numpy.ndarray
        float64 square array of odd size that sums to one.

    Raises
    ------
    UserError
        If the file is missing or unreadable, or the PSF is not 2-D, not
        finite, or does not have a positive sum.
    """
    from bmz_cosdd.errors import UserError

    p = Path(path)
    psf = np.squeeze(_load_array(p)).astype(np.float64)
    if psf.ndim != 2:
        raise UserError(f"PSF file {p} must be 2-D, got shape {psf.shape} after dropping singleton axes")
    if not np.all(np.isfinite(psf)):
        raise UserError(f"PSF file {p} contains NaN or infinite values")
    if float(psf.sum()) <= 0:
        raise UserError(f"PSF file {p} sums to zero/negative; it must have a positive sum")
    psf = np.clip(psf, 0.0, None)
    total = float(psf.sum())
    height, width = psf.shape
    cy = float((psf.sum(axis=1) * np.arange(height)).sum() / total)
    cx = float((psf.sum(axis=0) * np.arange(width)).sum() / total)
    # Round half up, not to even, so that ties behave the same along both axes.
    iy, ix = int(math.floor(cy + 0.5)), int(math.floor(cx + 0.5))
    radius = max(iy, height - 1 - iy, ix, width - 1 - ix)
    out = np.zeros((2 * radius + 1, 2 * radius + 1), dtype=np.float64)
    y0, x0 = radius - iy, radius - ix
    out[y0 : y0 + height, x0 : x0 + width] = psf
    return prepare_psf(out)


class PSFConvolution(nn.Module):
    """Convolve every channel of a (B, C, Y, X) tensor (and every Z plane of a (B, C, Z, Y, X) one) with one 2-D PSF.

    The output has the input's size (replicate padding, which also works for
    kernels larger than the image) and is not shifted: a delta at (y, x) gives
    the PSF centred at (y, x). The operation is a true convolution (the kernel
    is flipped), which matters for asymmetric measured PSFs.

    Parameters
    ----------
    kernel_size : int
        Odd height and width of the kernel.
    channels : int
        Number of image channels (informational; every channel uses the same PSF).

    Attributes
    ----------
    kernel : torch.Tensor
        Persistent buffer of shape (1, 1, kernel_size, kernel_size), float32;
        a delta until :meth:`set_kernel` is called.
    radius : int
        ``kernel_size // 2``.
    """

    def __init__(self, kernel_size: int, channels: int) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.kernel_size = int(kernel_size)
        self.channels = int(channels)
        self.radius = int(kernel_size) // 2
        delta = torch.zeros(1, 1, kernel_size, kernel_size)
        delta[0, 0, self.radius, self.radius] = 1.0
        self.register_buffer("kernel", delta, persistent=True)

    def set_kernel(self, kernel: np.ndarray) -> None:
        """Copy a PSF into the ``kernel`` buffer.

        Parameters
        ----------
        kernel : numpy.ndarray
            2-D PSF with odd dimensions of at most ``kernel_size``; smaller
            PSFs are zero-padded around their centre. It is normalised to sum one.

        Raises
        ------
        UserError
            If the PSF is invalid (see :func:`prepare_psf`) or larger than ``kernel_size``.
        """
        from bmz_cosdd.errors import UserError

        k = prepare_psf(kernel)
        height, width = k.shape
        if height > self.kernel_size or width > self.kernel_size:
            raise UserError(f"PSF of shape {k.shape} is larger than the layer's kernel size {self.kernel_size}")
        padded = np.zeros((self.kernel_size, self.kernel_size), dtype=np.float64)
        y0, x0 = self.radius - height // 2, self.radius - width // 2
        padded[y0 : y0 + height, x0 : x0 + width] = k
        with torch.no_grad():
            self.kernel.copy_(torch.from_numpy(padded).to(self.kernel.dtype)[None, None])

    def forward(self, x: Tensor) -> Tensor:
        """Convolve each channel (and each Z plane) of ``x`` (B, C, [Z,] Y, X) with the PSF; same shape out."""
        shape = x.shape
        h, w = shape[-2], shape[-1]
        r = self.radius
        flat = x.reshape(-1, 1, h, w)
        if r > 0:
            flat = F.pad(flat, [r, r, r, r], mode="replicate")
        # conv2d computes a correlation; flipping the kernel makes it a convolution.
        weight = torch.flip(self.kernel, [2, 3]).to(x.dtype)
        out = F.conv2d(flat, weight)
        return out.reshape(shape)
