"""The builder of every packaged sampling model (COSDD, HDN, DivNoising).

A packaged model's ``pytorch_state_dict`` weights name :func:`build_sampling_model`
and its keyword arguments; the source of this module, with the modules it needs, is
bundled into the package so a consumer can rebuild the architecture without
installing bmz-cosdd.
"""

from typing import Any, Dict, List, Optional

from torch import nn

from bmz_cosdd.nn.posterior import OUTPUT_WRAPPERS, PosteriorSampler
from bmz_cosdd.nn.decoders import SignalDecoder
from bmz_cosdd.nn.divnoising_vae import DivNoisingVAE
from bmz_cosdd.nn.ladder_vae import LadderVAE

#: The VAEs a sampling model can be built around, by the name packages record.
VAES = {"ladder": LadderVAE, "divnoising": DivNoisingVAE}


def build_sampling_model(
    vae: str,
    vae_kwargs: Dict[str, Any],
    decoder_kwargs: Dict[str, Any],
    n_samples: int,
    sample_batch: int,
    seed: int,
    outputs: List[str],
    use_mean: Optional[List[bool]] = None,
) -> nn.Module:
    """Normalised (B, C, [Z,] Y, X) in; MMSE [, std [, samples (B, N, C, [Z,] Y, X)]] out.

    Parameters
    ----------
    vae
        ``ladder`` (COSDD, HDN) or ``divnoising``; ``vae_kwargs`` are its constructor's.
        A 3-D model has ``spatial_dims=3`` in both ``vae_kwargs`` and ``decoder_kwargs``.
    decoder_kwargs
        Of :class:`SignalDecoder`, which maps the VAE's features to the image.
    n_samples, sample_batch, seed
        Posterior samples averaged, decoded at once, and the seed of their draws.
    outputs
        ``["mmse"]``, ``["mmse", "std"]`` or ``["mmse", "std", "samples"]``.
    use_mean
        Per latent level (index 0 = finest): take the posterior mean instead of a sample.
    """
    dims = (vae_kwargs.get("spatial_dims", 2), decoder_kwargs.get("spatial_dims", 2))
    if dims[0] != dims[1]:
        raise ValueError(f"spatial_dims differ between vae_kwargs ({dims[0]}) and decoder_kwargs ({dims[1]})")
    network = VAES[vae](**vae_kwargs)
    decoder = SignalDecoder(**decoder_kwargs)
    sampler = PosteriorSampler(
        network, decoder, n_samples=n_samples, sample_batch=sample_batch, seed=seed, use_mean=use_mean,
        keep_samples="samples" in outputs,
    )
    return OUTPUT_WRAPPERS[tuple(outputs)](sampler)
