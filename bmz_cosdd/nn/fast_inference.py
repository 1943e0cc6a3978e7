"""Kernels of the networks' inference form: the same function as their training form, computed faster.

Posterior sampling runs the top-down path and the signal decoder once per sample, so
their evaluation-mode cost is the sampler's. The modules that take part
(:class:`~bmz_cosdd.nn.blocks.GatedResBlock`, :class:`~bmz_cosdd.nn.blocks.Upsample`,
the ladder VAE's levels, :class:`~bmz_cosdd.nn.decoders.SignalDecoder`) offer an
``infer`` method beside ``forward``, built from these functions:

- batch normalisation folded into the convolution before it (:func:`fold_batch_norm`),
  computed from the module's own parameters and running statistics at every call:
  a module holds no second copy of its weights, so a state dict loaded later (a
  package rebuilt from ``pytorch_state_dict`` weights) or a further training step is
  always what runs, and the state dict's keys do not change;
- Mish with one exponential in place of an exponential, a logarithm and a tanh (:func:`mish_`);
- activations in channels-last memory (:func:`channels_last`), where oneDNN's
  convolutions and the bilinear upsampling run markedly faster on the CPU than on
  (B, C, [Z,] Y, X)-contiguous tensors;
- no autograd graph: the callers run under ``torch.no_grad``.

Every ``infer`` equals its ``forward`` in evaluation mode to float rounding
(``tests/nn/test_fast_inference.py``); in training mode it is ``forward`` itself
(batch statistics cannot be folded). Everything here is TorchScript-compatible and
uses only ops that torch 2.0's TorchScript (deepImageJ's libtorch) has.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ["fold_batch_norm", "mish_", "channels_last", "draw_samples"]


def fold_batch_norm(
    weight: Tensor,
    bias: Optional[Tensor],
    running_mean: Optional[Tensor],
    running_var: Optional[Tensor],
    gamma: Optional[Tensor],
    beta: Optional[Tensor],
    eps: float,
) -> Tuple[Tensor, Tensor]:
    """Weight and bias of ``batch_norm(conv(x))`` in evaluation mode as one convolution.

    Parameters
    ----------
    weight : Tensor
        Convolution weight (C_out, C_in, *kernel).
    bias : Tensor, optional
        Convolution bias (C_out,).
    running_mean, running_var : Tensor
        The batch norm's running statistics (C_out,); required (a batch norm without
        them normalises by the batch's statistics even in evaluation mode).
    gamma, beta : Tensor, optional
        The batch norm's affine weight and bias (C_out,), None when it has none.
    eps : float
        The batch norm's ``eps``.

    Returns
    -------
    weight : Tensor
        (C_out, C_in, *kernel), ``weight * gamma / sqrt(running_var + eps)`` per output channel.
    bias : Tensor
        (C_out,), ``beta + (bias - running_mean) * gamma / sqrt(running_var + eps)``.
    """
    if running_mean is None or running_var is None:
        raise ValueError("a batch norm without running statistics cannot be folded")
    scale = torch.rsqrt(running_var + eps)
    if gamma is not None:
        scale = scale * gamma
    centred = -running_mean if bias is None else bias - running_mean
    shift = centred * scale
    if beta is not None:
        shift = shift + beta
    shape = [-1] + [1 for _ in range(weight.dim() - 1)]
    return weight * scale.reshape(shape), shift


def mish_(x: Tensor) -> Tensor:
    """Mish, ``x * tanh(softplus(x))``, written into ``x`` (which it returns); any shape.

    With ``e = exp(x)`` and ``h = e + e^2 / 2``, ``tanh(log(1 + e)) = h / (h + 1)``, so
    Mish is ``x / (1 + 1 / h)``: one exponential instead of an exponential, a logarithm
    and a hyperbolic tangent, and no cancellation anywhere (within 2 float32 ulps of
    Mish over the whole line). Where ``e`` overflows, ``1 / h`` is 0 and the result
    ``x``, as Mish's; where it underflows, the result is a zero of ``x``'s sign.
    """
    h = torch.exp(x)
    h.addcmul_(h, h, value=0.5)
    h.reciprocal_().add_(1.0)
    return x.div_(h)


def channels_last(x: Tensor) -> Tensor:
    """``x`` (B, C, Y, X) or (B, C, Z, Y, X) in channels-last memory; ``x`` itself when it already is.

    "Already" means the canonical strides: a tensor with a dimension of size 1 can count
    as channels-last contiguous with other strides, and the convolutions then fall back
    to (B, C, ...)-contiguous outputs.
    """
    shape = x.shape
    stride = 1
    canonical = [0 for _ in shape]
    for d in [1] + list(range(len(shape) - 1, 1, -1)) + [0]:
        canonical[d] = stride
        stride *= shape[d]
    if list(x.stride()) == canonical:
        return x
    out = torch.empty_like(x, memory_format=torch.channels_last_3d if x.dim() == 5 else torch.channels_last)
    return out.copy_(x)


def draw_samples(mu: Tensor, logvar: Tensor, eps: Tensor, use_mean: bool) -> Tensor:
    """Latents of k samples of each of B images, ``mu + exp(logvar / 2) * eps``, without repeating ``mu``.

    Parameters
    ----------
    mu, logvar : Tensor
        (B, C, [z,] y, x), per image.
    eps : Tensor
        (k * B, C, [z,] y, x), standard normal; sample ``i`` of image ``b`` at row ``i * B + b``.
    use_mean : bool
        Return ``mu`` for every sample (``eps`` only gives the shape).

    Returns
    -------
    Tensor
        (k * B, C, [z,] y, x), rows as in ``eps``.
    """
    batch = mu.shape[0]
    k = eps.shape[0] // batch
    shape = [k] + list(mu.shape)
    if eps.shape[1:] != mu.shape[1:] or k * batch != eps.shape[0]:
        raise ValueError("eps has the wrong shape for this level's latent")
    if use_mean:
        return mu.unsqueeze(0).expand(shape).reshape(eps.shape)
    return torch.addcmul(mu, torch.exp(0.5 * logvar), eps.reshape(shape)).reshape(eps.shape)
