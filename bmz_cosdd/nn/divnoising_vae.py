"""DivNoising's fully convolutional VAE with a single latent level.

It offers the interface of :class:`bmz_cosdd.nn.ladder_vae.LadderVAE` that
:class:`bmz_cosdd.nn.posterior.PosteriorSampler` and the export code use
(``n_levels``, ``latent_channels``, ``features``, ``size_step``, ``bottom_up``,
``top_down``, ``latent_shapes``), with exactly one level, so the same sampler
serves both.

Layout (``depth`` stages, level ``i`` with ``features * 2**i`` channels)
-------------------------------------------------------------------------
- encoder: per stage two conv blocks (3x3 conv, optional batch norm, ReLU,
  optional channel dropout), then a strided-conv downsampling; the first stage
  starts from ``in_channels``. Its output ``bu[0]`` lives at ``1 / 2**depth`` of
  the input resolution with ``features * 2**(depth - 1)`` channels;
- posterior q(z | x) = N(mu, exp(logvar)): a 1x1 conv of ``bu[0]`` to
  ``2 * latent`` channels, log-variance clamped to [-20, 10];
- prior p(z) = N(0, I) (fixed; the KL is analytic);
- decoder: a conv block from z to the deepest width, then per stage (deepest
  first) a bilinear x2 upsampling (+ 1x1 conv to the stage's width) and two
  conv blocks; the output has ``features`` channels at input resolution.

With ``spatial_dims=3`` every layer is its 3-D counterpart (volumes (B, C, Z, Y, X);
down- and upsampling act on Z too by default, upsampling is trilinear).

Anisotropic volumes (``spatial_dims=3``), as for the U-Net: ``z_pool[i]`` (``depth``
entries, stage 0 = finest) says whether stage ``i``'s downsampling and the
matching decoder upsampling act on Z; ``z_kernel[i]`` (``depth + 1`` entries) is the
Z extent of the convolutions at stage ``i``'s resolution: its encoder conv blocks,
its downsampling convolution where that keeps Z, and its decoder conv blocks;
the last entry is the latent resolution's (the decoder's first conv block). The
1x1 posterior is unaffected. Choose them with the nnU-Net rule (Isensee et al.,
Nature Methods 2021): pool Z and convolve along it only while its spacing is
within 2x of the finest; see :mod:`bmz_cosdd.nn.blocks`.

The signal head (features -> image channels) is not part of this module.

This file is bundled into exported model packages and compiled with
``torch.jit.script``: it imports only torch, typing, :mod:`bmz_cosdd.nn.blocks`
and :mod:`bmz_cosdd.nn.fast_inference`.
"""


from typing import Final, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from bmz_cosdd.nn.blocks import (
    Downsample,
    Reach,
    Upsample,
    anisotropy,
    batch_norm_class,
    channel_dropout_class,
    check_spatial_dims,
    check_spatial_size,
    conv_class,
    same_conv,
    sum_except_batch,
)
from bmz_cosdd.nn.fast_inference import channels_last, draw_samples, fold_batch_norm

__all__ = ["DivNoisingVAE"]


class _ConvBlock(nn.Module):
    """3x3 "same" conv, optional batch norm, ReLU, optional channel dropout."""

    batch_norm: Final[bool]
    norm_eps: float

    def __init__(
        self, cin: int, cout: int, batch_norm: bool, dropout: float, spatial_dims: int, z_kernel: int = 0
    ) -> None:
        super().__init__()
        self.batch_norm = bool(batch_norm)
        self.conv = same_conv(cin, cout, 3, spatial_dims, z_kernel, bias=not batch_norm)
        self.norm = batch_norm_class(spatial_dims)(cout) if batch_norm else nn.Identity()
        # TorchScript reads a batch norm's constants (eps) only inside its own methods.
        self.norm_eps = float(getattr(self.norm, "eps", 0.0))
        self.act = nn.ReLU()
        self.drop = channel_dropout_class(spatial_dims)(dropout) if dropout > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.act(self.norm(self.conv(x))))

    def infer(self, x: Tensor) -> Tensor:
        """``forward`` in evaluation mode with the batch norm folded into the convolution and
        the ReLU in place (:mod:`bmz_cosdd.nn.fast_inference`); ``forward`` in training mode."""
        if self.training:
            return self.forward(x)
        weight = self.conv.weight
        bias = self.conv.bias
        if self.batch_norm:
            n = self.norm
            weight, bias = fold_batch_norm(weight, bias, n.running_mean, n.running_var, n.weight, n.bias, self.norm_eps)
        return torch.relu_(self.conv._conv_forward(x, weight, bias))


def _divnoising_receptive_field(pool: List[bool], extents: List[int]) -> int:
    """Half-width along one axis: ``pool[i]`` whether stage i halves it, ``extents[i]`` its conv extent per stage."""
    depth = len(pool)
    f = Reach()
    for i in range(depth):
        f = f.conv(extents[i]).conv(extents[i])
        f = f.down(3) if pool[i] else f.conv(extents[i])
    f = f.conv(extents[depth])  # the posterior is 1x1; the decoder's first block
    for i in range(depth - 1, -1, -1):
        if pool[i]:
            f = f.up()
        f = f.conv(extents[i]).conv(extents[i])
    return f.halfwidth


class DivNoisingVAE(nn.Module):
    """Single-level convolutional VAE of DivNoising (Prakash et al., ICLR 2021).

    Maps an image (B, in_channels, [Z,] Y, X) to features (B, features, [Z,] Y, X)
    and the KL of its latent.

    Parameters
    ----------
    in_channels : int
        Channels of the input image.
    depth : int, default 2
        Number of down-/upsampling stages (>= 1); the latent lives at ``1 / 2**depth``
        of the input resolution.
    features : int, default 32
        Channels of the first encoder stage and of the decoder's output features;
        stage ``i`` has ``features * 2**i`` channels.
    latent : int, default 64
        Latent channels.
    batch_norm : bool, default True
        Batch normalisation after each 3x3 convolution (without it they get a bias).
    dropout : float, default 0.0
        Channel dropout (``nn.Dropout2d``, ``nn.Dropout3d`` in 3-D) after each conv block's activation.
    spatial_dims : {2, 3}, default 2
        Images (B, C, Y, X) or volumes (B, C, Z, Y, X).
    z_pool : sequence of bool, optional
        3-D only: ``depth`` entries (stage 0 = finest); whether that stage's
        downsampling and the matching upsampling halve / double Z. None = all True.
    z_kernel : sequence of int, optional
        3-D only: ``depth + 1`` odd Z extents of the convolutions per stage, the last
        for the latent resolution (see the module docstring); 0 or None = 3, as Y and
        X. None = all isotropic.

    Attributes
    ----------
    n_levels : int
        Always 1.
    latent_channels : list of int
        ``[latent]``.
    features : int
    size_step : int
        ``2 ** depth``; every input Y and X size must be a multiple of it.
    size_steps : tuple of int
        The step per spatial axis, (Y, X) or (Z, Y, X); Z's is ``2 ** sum(z_pool)``.
    receptive_fields : tuple of int
        Per spatial axis, (Y, X) or (Z, Y, X): an upper bound on the distance between
        an output feature and an input pixel that can change it (encoder, posterior,
        decoder), computed analytically.
    z_pool : list of bool
        As given (all True by default and in 2-D).
    z_kernel : list of int
        As given, 0 for the Y/X extent (all 0 by default and in 2-D).
    spatial_dims : int

    Notes
    -----
    ``forward``, ``bottom_up``, ``top_down`` and ``latent_shapes`` are
    TorchScript-compatible. In training mode batch normalisation couples the
    samples of a batch; use ``eval()`` for per-sample reproducibility.

    Examples
    --------
    >>> vae = DivNoisingVAE(1, depth=2, features=8, latent=4).eval()
    >>> features, kl = vae(torch.zeros(1, 1, 32, 48))
    >>> features.shape, kl[0].shape
    (torch.Size([1, 8, 32, 48]), torch.Size([1]))
    >>> thin = DivNoisingVAE(1, depth=2, features=4, latent=2, spatial_dims=3, z_pool=[False, False])
    >>> thin.size_steps, thin.latent_shapes([3, 16, 16])
    ((1, 4, 4), [[2, 3, 4, 4]])
    """

    # size_steps and receptive_fields (tuples) get their TorchScript types from their values.
    n_levels: int
    latent_channels: List[int]
    features: int
    size_step: int
    depth: int
    latent: int
    z_pool: List[bool]
    z_kernel: List[int]
    spatial_dims: Final[int]

    def __init__(
        self,
        in_channels: int,
        depth: int = 2,
        features: int = 32,
        latent: int = 64,
        batch_norm: bool = True,
        dropout: float = 0.0,
        spatial_dims: int = 2,
        z_pool: Optional[Sequence[bool]] = None,
        z_kernel: Optional[Sequence[int]] = None,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if in_channels < 1 or features < 1 or latent < 1:
            raise ValueError(
                f"in_channels, features and latent must be >= 1, got {in_channels}, {features}, {latent}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.n_levels = 1
        self.latent_channels = [latent]
        self.features = features
        self.size_step = 2**depth
        self.depth = depth
        self.latent = latent
        z_pools, z_kernels = anisotropy(z_pool, z_kernel, depth, depth + 1, spatial_dims)
        self.z_pool = z_pools
        self.z_kernel = z_kernels
        yx_field = _divnoising_receptive_field([True] * depth, [3] * (depth + 1))
        if spatial_dims == 3:
            z_field = _divnoising_receptive_field(z_pools, [k or 3 for k in z_kernels])
            self.size_steps = (2 ** sum(z_pools), self.size_step, self.size_step)
            self.receptive_fields = (z_field, yx_field, yx_field)
        else:
            self.size_steps = (self.size_step, self.size_step)
            self.receptive_fields = (yx_field, yx_field)

        widths = [features * 2**i for i in range(depth)]
        encoder: List[nn.Module] = []
        cin = in_channels
        for i, width in enumerate(widths):
            encoder.append(_ConvBlock(cin, width, batch_norm, dropout, spatial_dims, z_kernels[i]))
            encoder.append(_ConvBlock(width, width, batch_norm, dropout, spatial_dims, z_kernels[i]))
            encoder.append(Downsample(width, width, spatial_dims, z_pools[i], z_kernels[i]))
            cin = width
        self.encoder = nn.Sequential(*encoder)
        deepest = widths[-1]
        self.posterior = conv_class(spatial_dims)(deepest, 2 * latent, 1)

        decoder: List[nn.Module] = [_ConvBlock(latent, deepest, batch_norm, dropout, spatial_dims, z_kernels[depth])]
        cin = deepest
        for i in range(depth - 1, -1, -1):
            width = widths[i]
            decoder.append(Upsample(cin, width, spatial_dims, z_pools[i]))
            decoder.append(_ConvBlock(width, width, batch_norm, dropout, spatial_dims, z_kernels[i]))
            decoder.append(_ConvBlock(width, width, batch_norm, dropout, spatial_dims, z_kernels[i]))
            cin = width
        self.decoder = nn.Sequential(*decoder)

    def bottom_up(self, x: Tensor) -> List[Tensor]:
        """Encoder features ``[h]``, h of shape (B, C_deepest, *spatial / size_steps) (per axis).

        Parameters
        ----------
        x : Tensor
            (B, in_channels, [Z,] Y, X), every spatial size a multiple of its ``size_steps`` entry.
        """
        check_spatial_size(x, [s for s in self.size_steps], self.spatial_dims)
        return [self.encoder(x)]

    def posterior_params(self, h: Tensor) -> Tuple[Tensor, Tensor]:
        """(mu, logvar) of q(z | x) from the encoder features, logvar clamped to [-20, 10]."""
        params = self.posterior(h)
        mu = params[:, : self.latent]
        logvar = params[:, self.latent :].clamp(-20.0, 10.0)
        return mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        """Features (B, features, [Z,] Y, X) at input resolution from a latent (B, latent, [z,] y, x)."""
        return self.decoder(z)

    def top_down(
        self,
        bu: List[Tensor],
        eps: Optional[List[Tensor]] = None,
        use_mean: Optional[List[bool]] = None,
        compute_kl: bool = True,
    ) -> Tuple[Tensor, List[Tensor]]:
        """Sample z from the posterior and decode it.

        Parameters
        ----------
        bu : list of Tensor
            Output of :meth:`bottom_up` (one tensor, possibly repeated along the batch).
        eps : list of Tensor, optional
            One standard-normal tensor of the latent's shape (B, latent, [z,] y, x),
            used instead of an internal ``torch.randn_like`` draw.
        use_mean : list of bool, optional
            ``[True]`` takes the posterior mean instead of a sample.
        compute_kl : bool, default True
            False returns an empty KL list.

        Returns
        -------
        features : Tensor
            (B, features, [Z,] Y, X) at input resolution.
        kl : list of Tensor
            ``[KL(q(z|x) || N(0, I))]``, one (B,) tensor summed over (C, [z,] y, x), in
            nats; empty when ``compute_kl`` is False.
        """
        if len(bu) != 1:
            raise ValueError("bu must hold one tensor per level")
        if eps is not None and len(eps) != 1:
            raise ValueError("eps must hold one tensor per level")
        if use_mean is not None and len(use_mean) != 1:
            raise ValueError("use_mean must hold one flag per level")
        mu, logvar = self.posterior_params(bu[0])
        take_mean = False
        if use_mean is not None:
            take_mean = use_mean[0]
        if take_mean:
            z = mu
        else:
            if eps is None:
                noise = torch.randn_like(mu)
            else:
                noise = eps[0]
                if noise.shape != mu.shape:
                    raise ValueError("eps has the wrong shape for this level's latent")
            z = mu + torch.exp(0.5 * logvar) * noise
        kls: List[Tensor] = []
        if compute_kl:
            kl = 0.5 * (mu * mu + torch.exp(logvar) - logvar - 1.0)
            kls.append(sum_except_batch(kl))
        return self.decode(z), kls

    def prepare_sampling(self, bu: List[Tensor]) -> List[Tensor]:
        """``[posterior parameters (B, 2 * latent, [z,] y, x)]`` of :meth:`bottom_up`'s ``bu`` (B images, not
        repeated), computed once per image for :meth:`sample_features`."""
        if len(bu) != 1:
            raise ValueError("bu must hold one tensor per level")
        return [self.posterior(bu[0])]

    def sample_features(
        self, prepared: List[Tensor], eps: List[Tensor], use_mean: Optional[List[bool]] = None
    ) -> Tensor:
        """``top_down(bu, eps, use_mean, compute_kl=False)[0]`` for k samples of each of B images,
        in the decoder's inference form (:mod:`bmz_cosdd.nn.fast_inference`; equal up to float rounding).

        ``prepared`` is :meth:`prepare_sampling`'s; ``eps`` holds one standard-normal
        (k * B, latent, [z,] y, x) tensor, sample ``i`` of image ``b`` at row ``i * B + b``;
        returns (k * B, features, [Z,] Y, X) in channels-last memory, rows as in ``eps``.
        """
        if len(prepared) != 1 or len(eps) != 1:
            raise ValueError("prepared and eps must hold one tensor per level")
        mu = prepared[0][:, : self.latent]
        logvar = prepared[0][:, self.latent :].clamp(-20.0, 10.0)
        take_mean = False
        if use_mean is not None:
            take_mean = use_mean[0]
        h = channels_last(draw_samples(mu, logvar, eps[0], take_mean))
        for layer in self.decoder:
            h = layer.infer(h)
        return h

    def forward(self, x: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """``top_down(bottom_up(x))`` with a fresh posterior sample: (features, [kl])."""
        return self.top_down(self.bottom_up(x))

    @torch.jit.export
    def latent_shapes(self, spatial: List[int]) -> List[List[int]]:
        """``[[latent, *(spatial // size_steps)]]`` for an input of spatial size ``spatial`` ([Z,] Y, X)."""
        if len(spatial) != self.spatial_dims:
            raise ValueError(f"spatial must hold {self.spatial_dims} sizes, got {len(spatial)}")
        steps = [s for s in self.size_steps]
        return [[self.latent] + [spatial[i] // steps[i] for i in range(len(spatial))]]
