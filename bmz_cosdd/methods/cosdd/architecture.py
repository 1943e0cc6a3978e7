"""Builders of COSDD's exported models, callable with plain keyword arguments.

A packaged model's ``pytorch_state_dict`` weights name one of these callables and
its keyword arguments; the source of this module, with the modules it needs, is
bundled into the package so that a consumer can rebuild the architecture without
installing bmz-cosdd.
"""

from typing import List

from torch import nn

from bmz_cosdd.inference.posterior import OUTPUT_WRAPPERS, PosteriorSampler
from bmz_cosdd.nn.decoders import SignalDecoder
from bmz_cosdd.nn.ladder_vae import LadderVAE
from bmz_cosdd.nn.unet import UNet


def build_sampling_model(
    n_channels: int,
    n_levels: int,
    latent_channels: List[int],
    features: int,
    blocks_per_level: int,
    signal_layers: int,
    signal_hidden: int,
    n_samples: int,
    sample_batch: int,
    seed: int,
    outputs: List[str],
) -> nn.Module:
    """Normalised (B, C, Y, X) in; MMSE [, std [, samples (B, N, C, Y, X)]] out."""
    vae = LadderVAE(n_channels, n_levels, list(latent_channels), features, blocks_per_level=blocks_per_level)
    decoder = SignalDecoder(features, n_channels, layers=signal_layers, hidden=signal_hidden)
    sampler = PosteriorSampler(
        vae, decoder, n_samples=n_samples, sample_batch=sample_batch, seed=seed, keep_samples="samples" in outputs
    )
    return OUTPUT_WRAPPERS[tuple(outputs)](sampler)


def build_direct_model(n_channels: int, depth: int, features: int) -> nn.Module:
    """COSDD's deterministic direct denoiser: normalised (B, C, Y, X) in, denoised out."""
    return UNet(n_channels, n_channels, depth=depth, features=features)
