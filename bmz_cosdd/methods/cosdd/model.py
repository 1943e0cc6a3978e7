"""The COSDD networks: ladder VAE, 1-D autoregressive noise decoder, signal decoder, direct denoiser."""

from __future__ import annotations

from typing import Optional

from torch import nn

from bmz_cosdd.methods.anisotropy import sampling_halo
from bmz_cosdd.methods.cosdd.config import COSDDConfig
from bmz_cosdd.nn.ar_decoder import AutoregressiveDecoder
from bmz_cosdd.nn.decoders import SignalDecoder
from bmz_cosdd.nn.ladder_vae import LadderVAE
from bmz_cosdd.nn.unet import UNet


class COSDDModel(nn.Module):
    """All networks of one COSDD model.

    The VAE's latent feeds the autoregressive noise decoder (trained by the ELBO) and,
    detached, the signal decoder (trained by MSE against the noisy image, so it learns
    E[x | z], the signal). The optional direct denoiser regresses the decoded signal.
    """

    def __init__(self, config: COSDDConfig, n_channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        if config.direction == "auto" or config.ar_layers is None:
            raise ValueError("direction 'auto' and ar_layers None are resolved from the training data before the"
                             " model is built")
        self.n_channels = n_channels
        self.spatial_dims = spatial_dims
        self.direct_loss = config.direct_loss
        # Resolved from the data when a run starts (None: a model built outside a run trains without it).
        self.context_dropout = float(config.context_dropout or 0.0)
        volume = spatial_dims == 3
        self.vae = LadderVAE(
            in_channels=n_channels,
            n_levels=config.n_levels,
            latent_channels=list(config.latent_channels),
            features=config.features,
            blocks_per_level=config.blocks_per_level,
            spatial_dims=spatial_dims,
            z_pool=config.z_pool if volume else None,
            z_kernel=config.z_kernel if volume else None,
        )
        self.halos = sampling_halo(config.halo, config.z_halo, self.vae)  # context per spatial axis
        self.ar_decoder = AutoregressiveDecoder(
            image_channels=n_channels,
            cond_channels=config.features,
            direction=config.direction,
            n_layers=config.ar_layers,
            kernel_size=config.ar_kernel,
            hidden=config.ar_hidden,
            n_gaussians=config.n_gaussians,
            min_scale=config.min_scale,
            spatial_dims=spatial_dims,
        )
        self.signal_decoder = SignalDecoder(
            config.features, n_channels, layers=config.signal_layers, hidden=config.signal_hidden,
            spatial_dims=spatial_dims,
        )
        self.direct_denoiser: Optional[UNet] = None
        if config.direct_denoiser:
            self.direct_denoiser = UNet(
                n_channels, n_channels, depth=config.direct_depth, features=config.direct_features,
                spatial_dims=spatial_dims, z_pool=config.direct_z_pool if volume else None,
                z_kernel=config.direct_z_kernel if volume else None,
            )
