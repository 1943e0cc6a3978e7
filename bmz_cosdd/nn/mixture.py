"""Per-pixel Gaussian mixture likelihoods.

Mixture parameters are shaped (B, C, K, Y, X): K components for every channel of
every pixel. ``logits`` are unnormalised log mixture weights, ``scales`` standard
deviations (use :func:`scale_from_raw` to obtain them from network outputs).

:func:`mixture_nll`, :func:`mixture_mean` and :func:`scale_from_raw` are
TorchScript-compatible; :func:`mixture_sample` takes a ``torch.Generator`` and is
meant for eager Python only.
"""


from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["mixture_nll", "mixture_sample", "mixture_mean", "scale_from_raw"]


def scale_from_raw(raw: Tensor, min_scale: float) -> Tensor:
    """Map an unconstrained network output to a standard deviation >= ``min_scale``.

    ``min_scale + softplus(raw)``: the floor keeps the likelihood finite when the
    network pushes a component onto a single value (a scale of 0 gives NaNs).

    Parameters
    ----------
    raw : Tensor
        Any real values.
    min_scale : float
        The floor, > 0.

    Returns
    -------
    Tensor
        Same shape as ``raw``, every value >= ``min_scale``.
    """
    return min_scale + F.softplus(raw)


def mixture_nll(x: Tensor, logits: Tensor, means: Tensor, scales: Tensor) -> Tensor:
    """Negative log-likelihood of ``x`` under a per-pixel Gaussian mixture, in nats.

    Parameters
    ----------
    x : Tensor
        Observations, (B, C, Y, X).
    logits, means, scales : Tensor
        Mixture parameters, (B, C, K, Y, X); ``scales`` > 0.

    Returns
    -------
    Tensor
        (B, C, Y, X): ``-log sum_k softmax(logits)_k N(x; means_k, scales_k)``,
        computed with ``logsumexp`` so that no density is exponentiated.
    """
    log_w = torch.log_softmax(logits, dim=2)
    z = (x.unsqueeze(2) - means) / scales
    # 0.9189... = 0.5 * log(2 pi), written out: TorchScript cannot read module-level floats.
    log_pdf = -0.5 * z * z - torch.log(scales) - 0.9189385332046727
    return -torch.logsumexp(log_w + log_pdf, dim=2)


def mixture_mean(logits: Tensor, means: Tensor) -> Tensor:
    """Mean of a per-pixel Gaussian mixture.

    Parameters
    ----------
    logits, means : Tensor
        (B, C, K, Y, X).

    Returns
    -------
    Tensor
        (B, C, Y, X): ``sum_k softmax(logits)_k * means_k``.
    """
    return (torch.softmax(logits, dim=2) * means).sum(dim=2)


def mixture_sample(
    logits: Tensor, means: Tensor, scales: Tensor, generator: Optional[torch.Generator] = None
) -> Tensor:
    """Draw one sample per pixel and channel from a Gaussian mixture.

    The component is chosen with the Gumbel-max trick, then a Gaussian is drawn
    from it. Not meant for TorchScript (it takes a ``torch.Generator``).

    Parameters
    ----------
    logits, means, scales : Tensor
        (B, C, K, Y, X).
    generator : torch.Generator, optional
        Source of randomness. The random numbers are drawn on the generator's
        device (so a seeded CPU generator gives the same draws whatever device the
        parameters are on) and moved to the parameters' device. Without it, the
        global generator of the parameters' device is used.

    Returns
    -------
    Tensor
        (B, C, Y, X).
    """
    device = logits.device if generator is None else generator.device
    shape = logits.shape
    u = torch.rand(shape, generator=generator, device=device, dtype=logits.dtype).to(logits.device)
    tiny = torch.finfo(logits.dtype).tiny
    gumbel = -torch.log(-torch.log(u.clamp(min=tiny, max=1.0 - 1e-7)))
    k = torch.argmax(torch.log_softmax(logits, dim=2) + gumbel, dim=2, keepdim=True)
    mean = torch.gather(means, 2, k).squeeze(2)
    scale = torch.gather(scales, 2, k).squeeze(2)
    noise = torch.randn(mean.shape, generator=generator, device=device, dtype=mean.dtype).to(mean.device)
    return mean + scale * noise
