"""COSDD settings and the presets of the paper's appendix."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bmz_cosdd.config import from_dict
from bmz_cosdd.errors import UserError

DIRECTIONS = ("x", "y", "z", "none")
DIRECT_LOSSES = ("mse", "l1")


@dataclass
class COSDDConfig:
    """Architecture of a COSDD model.

    Parameters
    ----------
    preset
        Name of the preset the other values started from (``tiny``, ``small``, ``large``).
    direction
        Axis along which the noise is correlated: ``x`` (rows), ``y`` (columns),
        ``z`` (along Z, 3-D data only), ``none`` (pixel-independent: the noise decoder sees no other pixel) or
        ``auto`` (measured from the training images when the run starts; the
        run's config.yaml records the result).
    n_levels, latent_channels, features, blocks_per_level
        Ladder VAE: hierarchy levels, latent channels per level (finest first), feature
        width and gated residual blocks per level.
    ar_layers, ar_kernel, ar_hidden
        1-D autoregressive noise decoder: layers, kernel length and width; the receptive
        field grows with layers and kernel (8 layers of 5 give about 45 px).
    n_gaussians, min_scale
        Mixture components per pixel and the floor on their scale (normalised units).
    signal_layers, signal_hidden
        Signal decoder: 3x3 convolutions and their width.
    direct_denoiser, direct_loss, direct_depth, direct_features
        Optional deterministic U-Net that regresses the decoded signal (``mse`` gives the
        mean, ``l1`` the median) for one-pass prediction.
    halo
        Context in pixels added around each tile at prediction.
    """

    preset: str = "small"
    direction: str = "auto"
    n_levels: int = 6
    latent_channels: list[int] = field(default_factory=lambda: [32] * 5 + [64])
    features: int = 32
    blocks_per_level: int = 1
    ar_layers: int = 8
    ar_kernel: int = 5
    ar_hidden: int = 32
    n_gaussians: int = 3
    min_scale: float = 1e-3
    signal_layers: int = 4
    signal_hidden: int = 64
    direct_denoiser: bool = False
    direct_loss: str = "mse"
    direct_depth: int = 3
    direct_features: int = 32
    halo: int = 32


PRESETS: dict[str, dict[str, Any]] = {
    # Paper appendix, "large": 14 levels, 13 x 64 latent channels and 128 at the top.
    "large": dict(
        n_levels=14, latent_channels=[64] * 13 + [128], features=64, ar_hidden=64,
        signal_hidden=128, direct_features=40, direct_depth=3,
    ),
    # Paper appendix, "small": 6 levels and half the dimensions.
    "small": dict(
        n_levels=6, latent_channels=[32] * 5 + [64], features=32, ar_hidden=32,
        signal_hidden=64, direct_features=32, direct_depth=3,
    ),
    # For tests, the demo and quick CPU trials; not a quality setting.
    "tiny": dict(
        n_levels=4, latent_channels=[8] * 4, features=16, ar_layers=6, ar_hidden=16,
        signal_layers=3, signal_hidden=32, direct_features=8, direct_depth=2, halo=16,
    ),
}


def cosdd_config(values: dict[str, Any]) -> COSDDConfig:
    """Resolve ``values`` over their preset (default ``small``) and check them."""
    values = dict(values)
    preset = values.get("preset") or "small"
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r} (choose {', '.join(PRESETS)})")
    resolved = {**PRESETS[preset], **{k: v for k, v in values.items() if v is not None}, "preset": preset}
    cfg = from_dict(COSDDConfig, resolved, "model.")
    if isinstance(cfg.latent_channels, list) and len(cfg.latent_channels) == 1:
        cfg.latent_channels = cfg.latent_channels * cfg.n_levels
    if len(cfg.latent_channels) != cfg.n_levels:
        raise UserError(
            f"model.latent_channels has {len(cfg.latent_channels)} entries but model.n_levels is {cfg.n_levels}"
        )
    if cfg.direction not in DIRECTIONS + ("auto",):
        raise UserError(f"unknown noise direction {cfg.direction!r} (choose x, y, z, none or auto)")
    if cfg.direct_loss not in DIRECT_LOSSES:
        raise UserError(f"unknown direct-denoiser loss {cfg.direct_loss!r} (choose mse or l1)")
    for name in ("n_levels", "features", "ar_layers", "ar_kernel", "ar_hidden", "n_gaussians", "signal_layers"):
        if getattr(cfg, name) < 1:
            raise UserError(f"model.{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.min_scale <= 0:
        raise UserError(f"model.min_scale must be positive, got {cfg.min_scale}")
    if cfg.halo < 0:
        raise UserError(f"model.halo must not be negative, got {cfg.halo}")
    return cfg
