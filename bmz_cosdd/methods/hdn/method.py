"""Hierarchical DivNoising (Prakash et al., ICLR 2022): the ladder VAE scored by a pixel noise model.

HDN_3-6 (``--deactivate-levels 1,2``) takes no bottom-up information at the finest
levels, which then cannot reproduce pixel-scale structured noise.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

import torch

from pydantic import model_validator

from bmz_cosdd.config import (Fraction, NonNegativeFloat, Positive, PositiveList, check_levels, from_dict,
                              latent_widths, settings)
from bmz_cosdd.methods.noise_model_vae import NoiseModelSettings, NoiseModelVAEMethod
from bmz_cosdd.nn.ladder_vae import LadderVAE, ladder_downsampling


@settings
class HDNConfig(NoiseModelSettings):
    """HDN's ladder VAE (paper defaults) and the shared noise-model settings.

    ``deactivate_levels`` counts from 1 = finest; the top level cannot be deactivated.
    """

    n_levels: Positive = 6
    latent_channels: PositiveList = field(default_factory=lambda: [32])
    features: Positive = 64
    blocks_per_level: Positive = 5
    downsample_every: Positive = 2
    batch_norm: bool = True
    dropout: Fraction = 0.2
    deactivate_levels: PositiveList = field(default_factory=list)
    free_bits: NonNegativeFloat = 1.0

    @model_validator(mode="after")
    def _levels(self) -> "HDNConfig":
        widths = latent_widths(self.latent_channels, self.n_levels)
        if widths != self.latent_channels:
            self.latent_channels = widths
        bad = [lv for lv in self.deactivate_levels if not 1 <= lv < self.n_levels]
        if bad:
            raise ValueError(f"deactivate_levels (--deactivate-levels) must name levels 1 to {self.n_levels - 1}"
                             f" (1 = finest; the top level cannot be deactivated), got {bad}")
        check_levels(self.z_pool, self.n_levels, "z_pool")
        check_levels(self.z_kernel, self.n_levels, "z_kernel")
        if self.deactivate_levels != sorted(set(self.deactivate_levels)):
            self.deactivate_levels = sorted(set(self.deactivate_levels))
        return self


def hdn_config(values: dict[str, Any]) -> HDNConfig:
    """The ``model`` section as a checked :class:`HDNConfig` (``None`` values take the defaults)."""
    return from_dict(HDNConfig, {k: v for k, v in values.items() if v is not None}, "model.")


def _vae(cfg: HDNConfig, n_channels: int, spatial_dims: int):
    kwargs = {"in_channels": n_channels, "n_levels": cfg.n_levels, "latent_channels": list(cfg.latent_channels),
              "features": cfg.features, "blocks_per_level": cfg.blocks_per_level,
              "downsample_every": cfg.downsample_every, "batch_norm": cfg.batch_norm, "dropout": cfg.dropout,
              "deactivated": [lv - 1 for lv in cfg.deactivate_levels], "spatial_dims": spatial_dims}
    if spatial_dims == 3 and cfg.z_pool is not None:
        kwargs.update(z_pool=list(cfg.z_pool), z_kernel=list(cfg.z_kernel))
    return LadderVAE(**kwargs), "ladder", kwargs


def _describe(cfg: HDNConfig) -> dict[str, str]:
    off = cfg.deactivate_levels
    variant = (f"HDN_{max(off) + 1}-{cfg.n_levels}: levels {', '.join(map(str, off))} (1 = finest) take no bottom-up "
               "information and contribute their mean" if off else "HDN: every level is inferred from the image")
    return {"variant": variant,
            "architecture": f"ladder VAE, {cfg.n_levels} levels, latent channels {list(cfg.latent_channels)}, "
                            f"{cfg.features} features, {cfg.blocks_per_level} gated residual blocks per level, "
                            f"dropout {cfg.dropout}, free bits {cfg.free_bits} nats per level"}


HDN = NoiseModelVAEMethod(
    name="hdn",
    title="Hierarchical DivNoising",
    summary="HDN: ladder VAE with a pixel noise model; --deactivate-levels 1,2 (HDN_3-6) removes structured noise",
    make_config=hdn_config,
    make_vae=_vae,
    use_mean=lambda cfg: [lv + 1 in cfg.deactivate_levels for lv in range(cfg.n_levels)],
    z_levels=lambda cfg: (ladder_downsampling(cfg.n_levels, cfg.downsample_every), cfg.n_levels),
    options=[
        ("noise_model", str, "Noise model file from bmz-cosdd noise-model fit (required)."),
        ("n_levels", int, "Hierarchy levels."),
        ("features", int, "Feature width."),
        ("blocks_per_level", int, "Gated residual blocks per level."),
        ("dropout", float, "Dropout in the residual blocks."),
        ("free_bits", float, "Each level's KL counts as at least this many nats."),
        ("deactivate_levels", str, "Levels (1 = finest) without bottom-up information, e.g. 1,2 for HDN_3-6."),
    ],
    cite=[("M. Prakash, M. Delbracio, P. Milanfar and F. Jug, Interpretable Unsupervised Diversity Denoising and "
           "Artefact Removal, ICLR 2022", "10.48550/arXiv.2104.01374")],
    card="hdn.md",
    describe=_describe,
    structured_noise_hint="--deactivate-levels 1,2 (HDN_3-6) removes part of it",
    optimiser=torch.optim.Adamax,
    train_defaults={"lr": 3e-4},
    tags=["hdn", "hierarchical", "noise-model"],
)
