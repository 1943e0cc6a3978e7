"""Shared neural-network building blocks (all TorchScript-compatible in their forward paths).

- :mod:`~bmz_cosdd.nn.blocks`: gated residual block, down/up-sampling;
- :mod:`~bmz_cosdd.nn.mixture`: per-pixel Gaussian mixture likelihood;
- :mod:`~bmz_cosdd.nn.ar_decoder`: COSDD's 1-D autoregressive noise decoder;
- :mod:`~bmz_cosdd.nn.ladder_vae`: hierarchical (ladder) VAE for COSDD and HDN;
- :mod:`~bmz_cosdd.nn.unet`: U-Net for the Noise2Void family and COSDD's direct denoiser;
- :mod:`~bmz_cosdd.nn.posterior`: the seeded posterior sampler (MMSE, samples, spread) of the VAEs;
- :mod:`~bmz_cosdd.nn.sampling_model`: the scriptable sampling module a package ships;
- :mod:`~bmz_cosdd.nn.mean_shift`: DivNoising's MAP estimate from posterior samples (eager only).
"""

from bmz_cosdd.nn.ar_decoder import AutoregressiveDecoder
from bmz_cosdd.nn.blocks import Downsample, GatedResBlock, Upsample
from bmz_cosdd.nn.ladder_vae import LadderVAE, gaussian_kl
from bmz_cosdd.nn.mixture import mixture_mean, mixture_nll, mixture_sample, scale_from_raw
from bmz_cosdd.nn.unet import UNet

__all__ = [
    "AutoregressiveDecoder",
    "Downsample",
    "GatedResBlock",
    "LadderVAE",
    "UNet",
    "Upsample",
    "gaussian_kl",
    "mixture_mean",
    "mixture_nll",
    "mixture_sample",
    "scale_from_raw",
]
