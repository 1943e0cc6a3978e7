"""What the latent of a VAE method carries: the figures behind the posterior-collapse flag."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn


@torch.no_grad()
def latent_diagnostics(
    model: nn.Module, vae: nn.Module, decoder: nn.Module, batch: Tensor, use_mean: Optional[list[bool]] = None
) -> dict[str, Any]:
    """KL per level, the signal decoder's explained variance and the posterior spread on a batch.

    Parameters
    ----------
    model
        The method's whole model (put in ``eval()`` for the measurement, then restored).
    vae, decoder
        Its ladder or DivNoising VAE and the decoder from the VAE's features to the signal.
    batch
        Normalised images (B, C, [Z,] Y, X).
    use_mean
        Per level, whether prediction takes the posterior mean (HDN_3-6).

    Returns
    -------
    dict
        ``kl`` and ``kl_levels``: KL(q || p) in nats per pixel (total, and per level finest
        first); ``signal_explained_variance``: 1 - MSE(signal, x) / Var(x) for one posterior
        sample (the noise's share of Var(x) is the most it can leave unexplained in a good
        model); ``posterior_variance``: per-pixel variance of the decoded signal between two
        posterior samples (half their mean squared difference).
    """
    was_training = model.training
    model.eval()
    try:
        n_pixels = batch[0].numel()
        bu = vae.bottom_up(batch)
        features, kl_levels = vae.top_down(bu, use_mean=use_mean)
        signal = decoder(features).double()
        second = decoder(vae.top_down(bu, use_mean=use_mean, compute_kl=False)[0]).double()
    finally:
        model.train(was_training)
    x = batch.double()
    levels = [float(k.double().mean()) / n_pixels for k in kl_levels]
    return {
        "kl": float(sum(levels)),
        "kl_levels": levels,
        "signal_explained_variance": float(1.0 - ((signal - x) ** 2).mean() / x.var()),
        "posterior_variance": float(((signal - second) ** 2).mean() / 2.0),
    }
