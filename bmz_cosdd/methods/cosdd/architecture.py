"""The builder of COSDD's exported direct denoiser, callable with plain keyword arguments.

(Its sampling models are built by :mod:`bmz_cosdd.nn.sampling_model`, shared
by every VAE method.)

A packaged model's ``pytorch_state_dict`` weights name one of these callables and
its keyword arguments; the source of this module, with the modules it needs, is
bundled into the package so that a consumer can rebuild the architecture without
installing bmz-cosdd.
"""

from typing import List, Optional

from torch import nn

from bmz_cosdd.nn.unet import UNet


def build_direct_model(n_channels: int, depth: int, features: int, spatial_dims: int = 2,
                       z_pool: Optional[List[bool]] = None, z_kernel: Optional[List[int]] = None) -> nn.Module:
    """COSDD's deterministic direct denoiser: normalised (B, C, [Z,] Y, X) in, denoised out
    (``z_pool``, ``z_kernel``: the z treatment of a volume model, see :class:`bmz_cosdd.nn.unet.UNet`)."""
    return UNet(n_channels, n_channels, depth=depth, features=features, spatial_dims=spatial_dims,
                z_pool=z_pool, z_kernel=z_kernel)
