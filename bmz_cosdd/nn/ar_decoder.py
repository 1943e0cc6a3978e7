"""COSDD's 1-D autoregressive noise decoder p(x | z).

The decoder predicts, for every pixel, a Gaussian mixture over the pixel's value
given the latent features at that pixel and the values of STRICTLY EARLIER
pixels of the same row (direction ``"x"``) or column (direction ``"y"``). Its
receptive field is one-dimensional, so it can model row/column-correlated noise
but not the signal, which therefore has to be carried by the latent. Direction
``"none"`` sees no other pixel at all: a learned pixel noise model p(x_i | z)
for pixel-independent noise.

The same decoder serves 3-D volumes (``spatial_dims=3``, tensors (B, C, Z, Y, X))
with direction ``"x"``, ``"y"`` or ``"z"`` (along Z: the noise of light-sheet or
confocal stacks correlated from slice to slice).

Layout of the stack (written for direction "x"; other directions swap their axis
with X around it):

- layer 0: a 1 x k convolution over the input padded by k on the left, whose last
  output is dropped, so output i sees pixels i-k .. i-1 (the pixel itself is masked);
- layers 1 .. n-1: causal 1 x k convolutions padded by (k-1)*d on the left, with
  dilation d = 2 on odd layers and 1 on even layers, residual connections;
- every layer adds a 1x1 convolution of the conditioning features and applies ReLU;
- a 1x1 head gives, per image channel, K mixture logits, means and raw scales.
"""


from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bmz_cosdd.nn.blocks import conv_class
from bmz_cosdd.nn.mixture import mixture_nll, mixture_sample, scale_from_raw

__all__ = ["AutoregressiveDecoder", "receptive_field", "layer_dilation", "layers_for_field"]


def layer_dilation(layer: int) -> int:
    """Dilation of layer ``layer`` (0-based) of the stack: 1, 2, 1, 2, ..."""
    return 2 if layer % 2 == 1 else 1


def receptive_field(n_layers: int, kernel_size: int) -> int:
    """Number of earlier pixels along the noise direction that one output sees.

    The first layer sees ``kernel_size`` earlier pixels; every later layer of
    dilation d extends the reach by ``(kernel_size - 1) * d``.

    Examples
    --------
    >>> receptive_field(8, 5)
    49
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    reach = kernel_size
    for layer in range(1, n_layers):
        reach += (kernel_size - 1) * layer_dilation(layer)
    return reach


def layers_for_field(field: int, kernel_size: int) -> int:
    """The fewest layers whose :func:`receptive_field` reaches ``field`` pixels.

    Examples
    --------
    >>> layers_for_field(8, 5), layers_for_field(40, 5), receptive_field(layers_for_field(40, 5), 5)
    (2, 7, 41)
    """
    if field < 1 or kernel_size < 2:
        raise ValueError(f"need field >= 1 and kernel_size >= 2, got {field}, {kernel_size}")
    layers = 1
    while receptive_field(layers, kernel_size) < field:
        layers += 1
    return layers


def _line_conv(spatial_dims: int, cin: int, cout: int, kernel_size: int, dilation: int = 1) -> nn.Module:
    """A convolution along the last axis only: 1 x k (2-D) or 1 x 1 x k (3-D)."""
    ones = (1,) * (spatial_dims - 1)
    return conv_class(spatial_dims)(cin, cout, ones + (kernel_size,), dilation=ones + (dilation,))


def _point_conv(spatial_dims: int, cin: int, cout: int) -> nn.Module:
    return conv_class(spatial_dims)(cin, cout, 1)


class _MaskedFirstLayer(nn.Module):
    """Layer 0: sees strictly earlier pixels of the row plus the conditioning at the pixel.

    With ``blind`` it sees no pixel of the image at all (direction "none").
    """

    blind: bool

    def __init__(
        self, cin: int, cond_channels: int, hidden: int, kernel_size: int, blind: bool = False, spatial_dims: int = 2
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.blind = blind
        self.conv = _line_conv(spatial_dims, cin, hidden, kernel_size)
        self.cond = _point_conv(spatial_dims, cond_channels, hidden)

    def forward(
        self, x: Tensor, cond: Tensor, keep: Optional[Tensor] = None, cond_term: Optional[Tensor] = None
    ) -> Tensor:
        """``cond_term``: ``self.cond(cond)`` when the caller has it already (the decoder computes
        every layer's conditioning in one convolution); ``cond`` is then not read."""
        if cond_term is None:
            cond_term = self.cond(cond)
        if self.blind:
            return torch.relu(cond_term)
        if keep is not None:  # context dropout: hidden samples see zeros instead of their earlier pixels
            x = x * keep.reshape([-1] + [1] * (x.dim() - 1)).to(x.dtype)
        # Padding by k (not k-1) and dropping the last output shifts the window one
        # pixel to the left, so output i covers inputs i-k .. i-1.
        h = self.conv(F.pad(x, [self.kernel_size, 0, 0, 0]))
        h = h[..., :-1]
        return torch.relu_(h + cond_term)


class _CausalLayer(nn.Module):
    """Later layer: causal dilated 1 x k convolution with a residual connection."""

    def __init__(self, hidden: int, cond_channels: int, kernel_size: int, dilation: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.pad = (kernel_size - 1) * dilation
        self.conv = _line_conv(spatial_dims, hidden, hidden, kernel_size, dilation)
        self.cond = _point_conv(spatial_dims, cond_channels, hidden)

    def forward(self, h: Tensor, cond: Tensor, cond_term: Optional[Tensor] = None) -> Tensor:
        """``cond_term``: as for :class:`_MaskedFirstLayer`."""
        if cond_term is None:
            cond_term = self.cond(cond)
        out = self.conv(F.pad(h, [self.pad, 0, 0, 0]))
        # In place: the convolution's backward does not need its output (ReLU's needs only its own).
        return h + torch.relu_(out.add_(cond_term))


class AutoregressiveDecoder(nn.Module):
    """Conditional 1-D autoregressive Gaussian-mixture decoder (COSDD's noise model).

    Parameters
    ----------
    image_channels : int
        Channels C of the image x.
    cond_channels : int
        Channels of the conditioning features (the VAE's output features).
    direction : {"x", "y", "z", "none"}, default "x"
        Noise direction: pixels depend on earlier pixels of the same row ("x"),
        column ("y") or, in 3-D, line along Z ("z"). All channels of earlier pixels
        enter; no channel of the pixel itself and nothing from other lines does.
        "none": no other pixel enters (pixel-independent noise).
    n_layers : int, default 8
        Number of 1 x k convolution layers.
    kernel_size : int, default 5
        k.
    hidden : int, default 64
        Filters per layer.
    n_gaussians : int, default 3
        Mixture components K per pixel and channel.
    min_scale : float, default 1e-3
        Floor of the mixture scales (in the units of x).
    spatial_dims : {2, 3}, default 2
        Images (B, C, Y, X) or volumes (B, C, Z, Y, X).

    Attributes
    ----------
    receptive_field : int
        Number of earlier pixels along ``direction`` that one output sees
        (49 for the defaults; 0 for direction "none").
    direction : str
    image_channels, n_gaussians : int
    min_scale : float

    Notes
    -----
    ``forward`` and ``nll`` are TorchScript-compatible; ``sample`` is eager only.

    Examples
    --------
    >>> dec = AutoregressiveDecoder(1, 16)
    >>> logits, means, scales = dec(torch.zeros(2, 1, 8, 32), torch.zeros(2, 16, 8, 32))
    >>> logits.shape
    torch.Size([2, 1, 3, 8, 32])
    """

    receptive_field: int
    _swap: int

    def __init__(
        self,
        image_channels: int,
        cond_channels: int,
        direction: str = "x",
        n_layers: int = 8,
        kernel_size: int = 5,
        hidden: int = 64,
        n_gaussians: int = 3,
        min_scale: float = 1e-3,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        directions = ("x", "y", "none") if spatial_dims == 2 else ("x", "y", "z", "none")
        if direction not in directions:
            raise ValueError(f"direction must be one of {', '.join(directions)} in {spatial_dims}-D, got {direction!r}")
        if min_scale <= 0:
            raise ValueError(f"min_scale must be > 0, got {min_scale}")
        if kernel_size < 2:
            raise ValueError(f"kernel_size must be >= 2, got {kernel_size}")
        self.image_channels = image_channels
        self.hidden = hidden
        self.n_gaussians = n_gaussians
        self.min_scale = float(min_scale)
        self.direction = direction
        self.spatial_dims = spatial_dims
        # The direction's axis is swapped with X (the last axis) around the stack: 0 none, 2 Y, 3 Z.
        self._swap = {"y": 2, "z": 3}.get(direction, 0)
        blind = direction == "none"
        self.receptive_field = 0 if blind else receptive_field(n_layers, kernel_size)

        self.first = _MaskedFirstLayer(image_channels, cond_channels, hidden, kernel_size, blind, spatial_dims)
        self.layers = nn.ModuleList(
            [_CausalLayer(hidden, cond_channels, kernel_size, layer_dilation(i), spatial_dims)
             for i in range(1, n_layers)]
        )
        self.head = nn.Sequential(
            _point_conv(spatial_dims, hidden, hidden),
            nn.ReLU(inplace=True),  # a convolution's backward does not need its output
            _point_conv(spatial_dims, hidden, image_channels * 3 * n_gaussians),
        )

    def _cond_terms(self, cond: Tensor) -> List[Tensor]:
        """Every layer's 1x1 convolution of ``cond`` (first layer first) as one convolution with the
        layers' weights stacked: one pass over ``cond`` forward and backward instead of one a layer."""
        weights = [self.first.cond.weight]
        biases = [self.first.cond.bias]
        for layer in self.layers:
            weights.append(layer.cond.weight)
            biases.append(layer.cond.bias)
        bias: List[Tensor] = []
        for b in biases:
            if b is not None:
                bias.append(b)
        out = self.first.cond._conv_forward(cond, torch.cat(weights, 0), torch.cat(bias, 0))
        return list(out.split(self.hidden, dim=1))

    def _params_x(self, x: Tensor, cond: Tensor, keep: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """Mixture parameters for direction "x" (rows); tensors already in that frame."""
        terms = self._cond_terms(cond)
        h = self.first(x, cond, keep, terms[0])
        i = 1
        for layer in self.layers:
            h = layer(h, cond, terms[i])
            i += 1
        out = self.head(h)
        shape = [out.shape[0], self.image_channels, 3, self.n_gaussians] + list(out.shape[2:])
        out = out.reshape(shape)
        logits = out[:, :, 0]
        means = out[:, :, 1]
        scales = scale_from_raw(out[:, :, 2], self.min_scale)
        return logits, means, scales

    def forward(self, x: Tensor, cond: Tensor, keep: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """Mixture parameters of p(x_i | x_<i, z) for every pixel.

        Parameters
        ----------
        x : Tensor
            Image, (B, image_channels, Y, X) (or (B, image_channels, Z, Y, X) in 3-D).
        cond : Tensor
            Conditioning features, (B, cond_channels, Y, X) (or with Z).
        keep : Tensor, optional
            (B,) of 1 (the sample's earlier pixels are seen) or 0 (hidden: the decoder sees
            zeros, so it predicts from the latent alone). Context dropout in training.

        Returns
        -------
        logits, means, scales : Tensor
            Each (B, image_channels, K, Y, X) (or with Z); scales >= ``min_scale``.
        """
        if self._swap > 0:
            d = -self._swap
            logits, means, scales = self._params_x(x.transpose(-1, d), cond.transpose(-1, d), keep)
            return logits.transpose(-1, d), means.transpose(-1, d), scales.transpose(-1, d)
        return self._params_x(x, cond, keep)

    @torch.jit.export
    def nll(self, x: Tensor, cond: Tensor, keep: Optional[Tensor] = None) -> Tensor:
        """Negative log-likelihood of ``x`` per pixel and channel, (B, C, [Z,] Y, X), in nats
        (``keep``: see :meth:`forward`)."""
        logits, means, scales = self.forward(x, cond, keep)
        return mixture_nll(x, logits, means, scales)

    def sample(self, cond: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Draw a noise image from p(x | z) by ancestral sampling along the direction.

        Pixels are drawn one position at a time (all rows, or columns, in parallel);
        each step evaluates the network on a window of ``receptive_field + 1``
        positions only, which gives the same result as the full image since nothing
        further away can enter. Eager only (not TorchScript).

        Parameters
        ----------
        cond : Tensor
            Conditioning features, (B, cond_channels, Y, X).
        generator : torch.Generator, optional
            See :func:`bmz_cosdd.nn.mixture.mixture_sample`.

        Returns
        -------
        Tensor
            (B, image_channels, Y, X).
        """
        c = cond.transpose(-1, -self._swap) if self._swap > 0 else cond
        x = c.new_zeros([c.shape[0], self.image_channels] + list(c.shape[2:]))
        w = x.shape[-1]
        if self.first.blind:  # no pixel depends on another: one pass
            with torch.no_grad():
                logits, means, scales = self._params_x(x, c)
                return mixture_sample(logits, means, scales, generator)
        with torch.no_grad():
            for i in range(w):
                lo = max(0, i - self.receptive_field)
                logits, means, scales = self._params_x(x[..., lo : i + 1], c[..., lo : i + 1])
                x[..., i] = mixture_sample(logits[..., -1], means[..., -1], scales[..., -1], generator)
        return x.transpose(-1, -self._swap) if self._swap > 0 else x
