"""The blind-spot network (U-Net, then the PSF for PSF-N2V) and its export builder.

A packaged model's ``pytorch_state_dict`` weights name :func:`build_blind_spot_model`
and its keyword arguments; this module's source, with the modules it needs, is
bundled into the package so a consumer can rebuild it without bmz-cosdd.
"""

from typing import List, Optional, Tuple

from torch import Tensor, nn

from bmz_cosdd.methods.n2v.psf import PSFConvolution
from bmz_cosdd.nn.unet import UNet


class BlindSpotNet(nn.Module):
    """U-Net whose output is optionally convolved with a PSF.

    The U-Net's output ``z`` is the deconvolved estimate; ``psf(z)`` is the denoised
    image that the blind-spot loss compares with the noisy input. Without a PSF
    (``psf_size=0``) both are the U-Net's output.

    Parameters
    ----------
    deconvolved
        ``forward`` returns ``z`` instead of ``psf(z)`` (an exported deconvolution).
    spatial_dims
        2 for (B, C, Y, X) images, 3 for (B, C, Z, Y, X) volumes (the PSF then acts
        within each Z plane).
    z_pool, z_kernel
        Volumes: the U-Net's z treatment per level (see :class:`bmz_cosdd.nn.unet.UNet`).

    Attributes
    ----------
    size_steps, halos
        Per spatial axis ((Y, X) or (Z, Y, X)): sizes accepted are multiples of ``size_steps``;
        ``halos`` is the exact tiling context (the U-Net's receptive field, plus the PSF's radius
        in y and x for the denoised output). ``size_step`` and ``halo`` are their y/x values.
    """

    size_step: int
    halo: int
    size_steps: List[int]
    halos: List[int]
    deconvolved: bool
    has_psf: bool

    def __init__(
        self,
        n_channels: int,
        depth: int,
        features: int,
        kernel_size: int,
        batch_norm: bool,
        blur_pool: bool,
        top_skip: bool,
        psf_size: int,
        deconvolved: bool = False,
        spatial_dims: int = 2,
        z_pool: Optional[List[bool]] = None,
        z_kernel: Optional[List[int]] = None,
    ) -> None:
        super().__init__()
        self.unet = UNet(
            n_channels, n_channels, depth=depth, features=features, kernel_size=kernel_size,
            batch_norm=batch_norm, blur_pool=blur_pool, top_skip=top_skip, spatial_dims=spatial_dims,
            z_pool=z_pool, z_kernel=z_kernel,
        )
        self.has_psf = psf_size > 0
        self.psf = PSFConvolution(max(psf_size, 1), n_channels)
        self.deconvolved = deconvolved
        self.size_step = self.unet.size_step
        # Exact tiling needs every input pixel that can reach an output pixel; the PSF acts within planes.
        psf_reach = 0 if deconvolved or not self.has_psf else self.psf.radius
        self.halo = self.unet.receptive_field + psf_reach
        self.size_steps = [int(s) for s in self.unet.size_steps]
        fields = [int(r) for r in self.unet.receptive_fields]
        self.halos = [r + (psf_reach if i >= len(fields) - 2 else 0) for i, r in enumerate(fields)]

    def both(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """(deconvolved, denoised) for a normalised (B, C, [Z,] Y, X) batch."""
        z = self.unet(x)
        if self.has_psf:
            return z, self.psf(z)
        return z, z

    def forward(self, x: Tensor) -> Tensor:
        z, denoised = self.both(x)
        if self.deconvolved:
            return z
        return denoised


def build_blind_spot_model(
    n_channels: int,
    depth: int,
    features: int,
    kernel_size: int,
    batch_norm: bool,
    blur_pool: bool,
    top_skip: bool,
    psf_size: int,
    deconvolved: bool,
    spatial_dims: int = 2,
    z_pool: Optional[List[bool]] = None,
    z_kernel: Optional[List[int]] = None,
) -> nn.Module:
    """Normalised (B, C, [Z,] Y, X) in; denoised (or, with ``deconvolved``, deconvolved) out."""
    return BlindSpotNet(
        n_channels, depth, features, kernel_size, batch_norm, blur_pool, top_skip, psf_size, deconvolved,
        spatial_dims, z_pool, z_kernel,
    )

