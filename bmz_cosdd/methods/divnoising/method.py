"""DivNoising (Prakash et al., ICLR 2021): a one-level convolutional VAE scored by a pixel noise model."""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from bmz_cosdd.config import Fraction, NonNegative, Positive, check_levels, from_dict, settings
from bmz_cosdd.methods.noise_model_vae import NoiseModelSettings, NoiseModelVAEMethod
from bmz_cosdd.nn.divnoising_vae import DivNoisingVAE


@settings
class DivNoisingConfig(NoiseModelSettings):
    """DivNoising's VAE: ``depth`` poolings (latent at 1/2**depth resolution), ``features``
    channels at the first level, ``latent`` latent channels; the shared noise-model settings."""

    depth: Positive = 2
    features: Positive = 32
    latent: Positive = 64
    batch_norm: bool = True
    dropout: Fraction = 0.0
    kl_anneal_steps: NonNegative = 500

    @model_validator(mode="after")
    def _z_levels(self) -> "DivNoisingConfig":
        check_levels(self.z_pool, self.depth, "z_pool")
        check_levels(self.z_kernel, self.depth + 1, "z_kernel (the latent level last)")
        return self


def divnoising_config(values: dict[str, Any]) -> DivNoisingConfig:
    """The ``model`` section as a checked :class:`DivNoisingConfig` (``None`` values take the defaults)."""
    return from_dict(DivNoisingConfig, {k: v for k, v in values.items() if v is not None}, "model.")


def _vae(cfg: DivNoisingConfig, n_channels: int, spatial_dims: int):
    kwargs = {"in_channels": n_channels, "depth": cfg.depth, "features": cfg.features, "latent": cfg.latent,
              "batch_norm": cfg.batch_norm, "dropout": cfg.dropout, "spatial_dims": spatial_dims}
    if spatial_dims == 3 and cfg.z_pool is not None:
        kwargs.update(z_pool=list(cfg.z_pool), z_kernel=list(cfg.z_kernel))
    return DivNoisingVAE(**kwargs), "divnoising", kwargs


def _describe(cfg: DivNoisingConfig) -> dict[str, str]:
    return {"architecture": f"convolutional VAE, depth {cfg.depth}, {cfg.features} first-level features, "
                            f"{cfg.latent} latent channels at 1/{2 ** cfg.depth} resolution; KL annealed over "
                            f"{cfg.kl_anneal_steps} batches"}


DIVNOISING = NoiseModelVAEMethod(
    name="divnoising",
    title="DivNoising",
    summary="DivNoising: VAE with a pixel noise model; MMSE or MAP of posterior samples (pixel-independent noise)",
    make_config=divnoising_config,
    make_vae=_vae,
    use_mean=lambda cfg: [False],
    z_levels=lambda cfg: ([True] * cfg.depth + [False], cfg.depth),
    options=[
        ("noise_model", str, "Noise model file from bmz-cosdd noise-model fit (required)."),
        ("depth", int, "Poolings of the VAE (latent at 1/2**depth resolution)."),
        ("features", int, "Channels of the first VAE level."),
        ("latent", int, "Latent channels."),
        ("kl_anneal_steps", int, "Batches over which the KL weight rises from 0 to 1."),
        ("collapse_kl", float, "Stop with a posterior-collapse message below this KL (nats/pixel); 0: never."),
    ],
    cite=[("M. Prakash, A. Krull and F. Jug, Fully Unsupervised Diversity Denoising with Convolutional Variational "
           "Autoencoders, ICLR 2021", "10.48550/arXiv.2006.06072")],
    card="divnoising.md",
    describe=_describe,
    estimators=("mmse", "map"),
    train_defaults={"lr": 1e-3},
    tags=["divnoising", "noise-model"],
)
