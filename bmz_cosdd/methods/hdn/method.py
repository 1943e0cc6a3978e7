"""Hierarchical DivNoising (Prakash et al., ICLR 2022): the ladder VAE scored by a pixel noise model.

HDN_3-6 (``--deactivate-levels 1,2``) takes no bottom-up information at the finest
levels, which then cannot reproduce pixel-scale structured noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from bmz_cosdd.config import from_dict
from bmz_cosdd.errors import UserError
from bmz_cosdd.methods.noise_model_vae import NoiseModelSettings, NoiseModelVAEMethod
from bmz_cosdd.nn.ladder_vae import LadderVAE


@dataclass
class HDNConfig(NoiseModelSettings):
    """HDN's ladder VAE (paper defaults) and the shared noise-model settings.

    ``deactivate_levels`` counts from 1 = finest; the top level cannot be deactivated.
    """

    n_levels: int = 6
    latent_channels: list[int] = field(default_factory=lambda: [32])
    features: int = 64
    blocks_per_level: int = 5
    downsample_every: int = 2
    batch_norm: bool = True
    dropout: float = 0.2
    deactivate_levels: list[int] = field(default_factory=list)
    free_bits: float = 1.0


def hdn_config(values: dict[str, Any]) -> HDNConfig:
    cfg = from_dict(HDNConfig, {k: v for k, v in values.items() if v is not None}, "model.")
    if len(cfg.latent_channels) == 1:
        cfg.latent_channels = cfg.latent_channels * cfg.n_levels
    if len(cfg.latent_channels) != cfg.n_levels:
        raise UserError(f"model.latent_channels has {len(cfg.latent_channels)} entries for {cfg.n_levels} levels")
    for name in ("n_levels", "features", "blocks_per_level"):
        if getattr(cfg, name) < 1:
            raise UserError(f"model.{name} must be at least 1, got {getattr(cfg, name)}")
    if not 0 <= cfg.dropout < 1:
        raise UserError(f"model.dropout must be in [0, 1), got {cfg.dropout}")
    bad = [lv for lv in cfg.deactivate_levels if not 1 <= lv < cfg.n_levels]
    if bad:
        raise UserError(f"--deactivate-levels must name levels 1 to {cfg.n_levels - 1} (1 = finest; the top level"
                        f" cannot be deactivated), got {bad}")
    cfg.deactivate_levels = sorted(set(cfg.deactivate_levels))
    return cfg


def _vae(cfg: HDNConfig, n_channels: int, spatial_dims: int):
    kwargs = {"in_channels": n_channels, "n_levels": cfg.n_levels, "latent_channels": list(cfg.latent_channels),
              "features": cfg.features, "blocks_per_level": cfg.blocks_per_level,
              "downsample_every": cfg.downsample_every, "batch_norm": cfg.batch_norm, "dropout": cfg.dropout,
              "deactivated": [lv - 1 for lv in cfg.deactivate_levels], "spatial_dims": spatial_dims}
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
