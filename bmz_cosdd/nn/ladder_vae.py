"""Hierarchical (ladder) VAE shared by COSDD and HDN.

Resolution layout
-----------------
Level 0 is the finest. On the way up, level ``l`` first halves Y and X (and Z in
3-D; strided conv) when ``downsample[l]`` is True, then applies its gated residual
blocks; its output is ``bu[l]``. By default (``downsample_every=2``) levels 0, 2, 4,
... downsample, so the finest latent already lives at half resolution and pairs of
levels share a resolution. On the way down, level ``l`` works at the resolution
of ``bu[l]`` and ends with a bi- (trilinear in 3-D) upsampling where the bottom-up
path downsampled, so the output features come back at input resolution.

Top-down step at level ``l`` (from the top to level 0), with top-down features h:

- prior p(z_l | z_>l): 3x3 conv of h (top level: a learned per-channel mean and
  log-variance broadcast to the top level's spatial size, so the model runs on any
  image size that is a multiple of ``size_step``);
- posterior q(z_l | x, z_>l): 1x1 conv + gated block on concat(h, bu[l]), then a
  3x3 conv (top level: a 3x3 conv of bu[top]);
- z_l = mean + std * eps (or the posterior mean);
- h <- h + 1x1 conv(concat(h, z_l)) (the residual is the "stochastic skip";
  top level: h = 1x1 conv(z_top));
- ``blocks_per_level`` gated residual blocks, then upsampling if ``downsample[l]``.

The upsampled features of level 0 are the output (the decoders that consume them
add their own full-resolution layers, so none is spent here). The input x enters
the output only through the sampled latents. Prediction, which needs no KL, can
skip the priors with ``compute_kl=False``: per posterior sample the top-down
path then costs only the posterior and decoding convolutions.

Anisotropic volumes (``spatial_dims=3``): ``z_pool[l]`` says whether level ``l``'s
downsampling (where ``downsample[l]``) and the matching upsampling act on Z;
``z_kernel[l]`` is the Z extent of level ``l``'s convolutions: its gated residual
blocks (both paths and the posterior's merge block), its prior and posterior
convolutions, and its downsampling convolution where that keeps Z. The 5x5 stem
belongs to level 0; it stays 2 wider than the blocks along Z (5 for
``z_kernel[0] = 3``) unless ``z_kernel[0] = 1`` (no mixing along Z), which makes it
1 x 5 x 5. Choose them with the nnU-Net rule (Isensee et al., Nature Methods
2021): pool Z and convolve along it only while its spacing is within 2x of the
finest; see :mod:`bmz_cosdd.nn.blocks`.
"""


from typing import Final, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from bmz_cosdd.nn.blocks import (
    Downsample,
    GatedResBlock,
    Reach,
    Upsample,
    anisotropy,
    check_multiples,
    check_spatial_dims,
    check_spatial_size,
    conv_class,
    same_conv,
    sum_except_batch,
)
from bmz_cosdd.nn.fast_inference import channels_last, draw_samples

__all__ = ["LadderVAE", "gaussian_kl", "ladder_downsampling", "LOGVAR_MIN", "LOGVAR_MAX"]

#: Log-variances of the prior and posterior are clamped to this range; a variance
#: of exp(-20) is far below any useful latent precision and exp(10) far above the
#: N(0, 1)-scale of the latents, so only runaway values are affected.
LOGVAR_MIN = -20.0
LOGVAR_MAX = 10.0


def gaussian_kl(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """Elementwise KL(q || p) between diagonal Gaussians given by means and log-variances.

    Returns
    -------
    Tensor
        ``0.5 * (logvar_p - logvar_q + (exp(logvar_q) + (mu_q - mu_p)^2) / exp(logvar_p) - 1)``,
        broadcast shape of the inputs, in nats.
    """
    diff = mu_q - mu_p
    return 0.5 * (logvar_p - logvar_q + (torch.exp(logvar_q) + diff * diff) * torch.exp(-logvar_p) - 1.0)


# The clamps below write LOGVAR_MIN / LOGVAR_MAX out: TorchScript cannot read module-level floats.


def _split_gaussian(params: Tensor, channels: int) -> Tuple[Tensor, Tensor]:
    mu = params[:, :channels]
    logvar = params[:, channels:].clamp(-20.0, 10.0)
    return mu, logvar


def _draw(mu: Tensor, logvar: Tensor, eps: Optional[Tensor], use_mean: bool) -> Tensor:
    if use_mean:
        return mu
    if eps is None:
        # (B, C, ...)-ordered draws whatever mu's memory layout (channels-last in training): the same
        # noise at every position for a given seed.
        noise = torch.randn_like(mu, memory_format=torch.contiguous_format)
    else:
        if eps.shape != mu.shape:
            raise ValueError("eps has the wrong shape for this level's latent")
        noise = eps
    return mu + torch.exp(0.5 * logvar) * noise


def _eps_at(eps: Optional[List[Tensor]], level: int) -> Optional[Tensor]:
    if eps is None:
        return None
    return eps[level]


def _flag_at(flags: Optional[List[bool]], level: int) -> bool:
    if flags is None:
        return False
    return flags[level]


def _blocks(
    features: int, n: int, batch_norm: bool, dropout: float, spatial_dims: int, z_kernel: int = 0
) -> nn.Sequential:
    return nn.Sequential(
        *[
            GatedResBlock(
                features, batch_norm=batch_norm, dropout=dropout, spatial_dims=spatial_dims, z_kernel=z_kernel
            )
            for _ in range(n)
        ]
    )


def _stem_z_kernel(z_kernel: int) -> int:
    # The 5x5 stem is 2 wider than the level-0 blocks; along Z too, unless level 0 keeps planes apart.
    if z_kernel in (0, 1):
        return z_kernel
    return z_kernel + 2


def ladder_downsampling(n_levels: int, downsample_every: int = 2) -> List[bool]:
    """Which levels (finest first) halve the resolution: every ``downsample_every``-th from level 0
    (none when it is 0). The size step in y and x is ``2 ** sum(...)``."""
    return [downsample_every > 0 and level % downsample_every == 0 for level in range(n_levels)]


def _ladder_receptive_field(
    downsample: List[bool], halved: List[bool], deactivated: List[bool], extents: List[int], stem: int, n_blocks: int
) -> int:
    """Half-width along one axis of the whole network (every path from the input to the output features).

    ``halved[l]``: level l's downsampling halves this axis; ``extents[l]``: the
    extent along it of level l's convolutions; ``stem``: the stem's extent.
    """
    top = len(downsample) - 1
    f = Reach().conv(stem)
    bu: List[Reach] = []
    for level, k in enumerate(extents):
        if halved[level]:
            f = f.down(3)
        elif downsample[level]:
            f = f.conv(k)  # a downsampling that keeps this axis
        for _ in range(2 * n_blocks):
            f = f.conv(k)
        bu.append(f)
    h = bu[top].conv(extents[top])  # the top posterior
    for level in range(top, -1, -1):
        k = extents[level]
        if level < top:
            if deactivated[level]:
                z = h.conv(k)  # drawn from the prior
            else:
                z = h.merge(bu[level]).conv(k).conv(k).conv(k)  # merge block, then the posterior
            h = h.merge(z)
        for _ in range(2 * n_blocks):
            h = h.conv(k)
        if halved[level]:
            h = h.up()
    return h.halfwidth


class _BottomUpLevel(nn.Module):
    def __init__(
        self,
        features: int,
        n_blocks: int,
        downsample: bool,
        batch_norm: bool,
        dropout: float,
        spatial_dims: int,
        pool_z: bool = True,
        z_kernel: int = 0,
    ) -> None:
        super().__init__()
        self.down = Downsample(features, features, spatial_dims, pool_z, z_kernel) if downsample else nn.Identity()
        self.blocks = _blocks(features, n_blocks, batch_norm, dropout, spatial_dims, z_kernel)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.down(x))


class _TopLevel(nn.Module):
    """Top of the hierarchy: learned broadcast prior, posterior from bottom-up features only."""

    upsample: Final[bool]

    def __init__(
        self, features: int, latent: int, n_blocks: int, upsample: bool, batch_norm: bool, dropout: float,
        spatial_dims: int, pool_z: bool = True, z_kernel: int = 0,
    ) -> None:
        super().__init__()
        self.latent = latent
        conv = conv_class(spatial_dims)
        self.prior_mean = nn.Parameter(torch.zeros([1, latent] + [1] * spatial_dims))
        self.prior_logvar = nn.Parameter(torch.zeros([1, latent] + [1] * spatial_dims))
        self.posterior = same_conv(features, 2 * latent, 3, spatial_dims, z_kernel)
        self.z_in = conv(latent, features, 1)
        self.blocks = _blocks(features, n_blocks, batch_norm, dropout, spatial_dims, z_kernel)
        self.upsample = bool(upsample)
        self.up = Upsample(features, features, spatial_dims, pool_z) if upsample else nn.Identity()

    def prior(self, like: Tensor) -> Tuple[Tensor, Tensor]:
        logvar = self.prior_logvar.clamp(-20.0, 10.0)
        return self.prior_mean.expand_as(like), logvar.expand_as(like)

    def from_z(self, z: Tensor) -> Tensor:
        return self.up(self.blocks(self.z_in(z)))

    def forward(
        self, bu: Tensor, eps: Optional[Tensor], use_mean: bool, compute_kl: bool
    ) -> Tuple[Tensor, Optional[Tensor]]:
        q_mu, q_lv = _split_gaussian(self.posterior(bu), self.latent)
        z = _draw(q_mu, q_lv, eps, use_mean)
        kl: Optional[Tensor] = None
        if compute_kl:
            p_mu, p_lv = self.prior(q_mu)
            kl = sum_except_batch(gaussian_kl(q_mu, q_lv, p_mu, p_lv))
        return self.from_z(z), kl

    def prepare(self, bu: Tensor) -> Tensor:
        """The posterior's parameters (B, 2 * latent, ...): they depend on the image only."""
        return channels_last(self.posterior(channels_last(bu)))

    def infer(self, prepared: Tensor, eps: Tensor, use_mean: bool) -> Tensor:
        """``forward`` (without KL) for k samples per image: ``eps`` (k * B, latent, ...) -> (k * B, features, ...)."""
        q_mu, q_lv = _split_gaussian(prepared, self.latent)
        h = self.z_in(channels_last(draw_samples(q_mu, q_lv, eps, use_mean)))
        for block in self.blocks:
            h = block.infer(h)
        if self.upsample:
            h = self.up.infer(h)
        return h


class _TopDownLevel(nn.Module):
    """Any level below the top: conditional prior, posterior from merged bu/td features.

    A deactivated level (HDN_3-6) takes no bottom-up information: its posterior is
    its prior p(z_l | z_>l), so its KL is zero and it has no merge/posterior layers.
    """

    # Final: TorchScript compiles only the branch that exists (a deactivated level has no merge layers).
    deactivated: Final[bool]
    upsample: Final[bool]

    def __init__(
        self,
        features: int,
        latent: int,
        n_blocks: int,
        upsample: bool,
        batch_norm: bool,
        dropout: float,
        deactivated: bool = False,
        spatial_dims: int = 2,
        pool_z: bool = True,
        z_kernel: int = 0,
    ) -> None:
        super().__init__()
        self.latent = latent
        self.deactivated = deactivated
        conv = conv_class(spatial_dims)
        self.prior_conv = same_conv(features, 2 * latent, 3, spatial_dims, z_kernel)
        if deactivated:
            self.merge = nn.Identity()
            self.merge_block = nn.Identity()
            self.posterior = nn.Identity()
        else:
            self.merge = conv(2 * features, features, 1)
            self.merge_block = GatedResBlock(
                features, batch_norm=batch_norm, dropout=dropout, spatial_dims=spatial_dims, z_kernel=z_kernel
            )
            self.posterior = same_conv(features, 2 * latent, 3, spatial_dims, z_kernel)
        self.z_in = conv(features + latent, features, 1)
        self.blocks = _blocks(features, n_blocks, batch_norm, dropout, spatial_dims, z_kernel)
        self.features = features
        self.upsample = bool(upsample)
        self.up = Upsample(features, features, spatial_dims, pool_z) if upsample else nn.Identity()

    def prior(self, h: Tensor) -> Tuple[Tensor, Tensor]:
        return _split_gaussian(self.prior_conv(h), self.latent)

    def from_z(self, h: Tensor, z: Tensor) -> Tensor:
        h = h + self.z_in(torch.cat([h, z], dim=1))
        return self.up(self.blocks(h))

    def forward(
        self, h: Tensor, bu: Tensor, eps: Optional[Tensor], use_mean: bool, compute_kl: bool
    ) -> Tuple[Tensor, Optional[Tensor]]:
        if self.deactivated:
            p_mu, p_lv = self.prior(h)
            z = _draw(p_mu, p_lv, eps, use_mean)
            kl_zero: Optional[Tensor] = None
            if compute_kl:
                kl_zero = torch.zeros(h.shape[0], dtype=h.dtype, device=h.device)
            return self.from_z(h, z), kl_zero
        merged = self.merge_block(self.merge(torch.cat([h, bu], dim=1)))
        q_mu, q_lv = _split_gaussian(self.posterior(merged), self.latent)
        z = _draw(q_mu, q_lv, eps, use_mean)
        kl: Optional[Tensor] = None
        if compute_kl:
            p_mu, p_lv = self.prior(h)
            kl = sum_except_batch(gaussian_kl(q_mu, q_lv, p_mu, p_lv))
        return self.from_z(h, z), kl

    def prepare(self, bu: Tensor) -> Tensor:
        """The bottom-up half of the merge convolution, with its bias, (B, features, ...):
        it depends on the image only (an empty tensor for a deactivated level)."""
        f = self.features
        if self.deactivated:
            prepared = torch.zeros(0)
        else:
            prepared = self.merge._conv_forward(channels_last(bu), self.merge.weight[:, f:], self.merge.bias)
        return prepared

    def infer(self, h: Tensor, prepared: Tensor, eps: Tensor, use_mean: bool) -> Tensor:
        """``forward`` (without KL) for k samples per image: ``h`` (k * B, features, ...), ``prepared``
        from :meth:`prepare` (B, ...), ``eps`` (k * B, latent, ...) -> (k * B, features, ...)."""
        f = self.features
        if self.deactivated:
            p_mu, p_lv = self.prior(h)
            z = _draw(p_mu, p_lv, eps, use_mean)
        else:
            merged = self.merge._conv_forward(h, self.merge.weight[:, :f], None)
            batch = prepared.shape[0]
            merged.view([merged.shape[0] // batch] + list(prepared.shape)).add_(prepared)
            q_mu, q_lv = _split_gaussian(self.posterior(self.merge_block.infer(merged)), self.latent)
            z = _draw(q_mu, q_lv, eps, use_mean)
        # h + z_in(cat(h, z)) as one convolution: the identity added to z_in's weight on h.
        weight = self.z_in.weight.clone()
        eye = torch.eye(f, dtype=weight.dtype, device=weight.device)
        weight[:, :f].add_(eye.reshape([f, f] + [1] * (weight.dim() - 2)))
        h = self.z_in._conv_forward(torch.cat([h, channels_last(z)], dim=1), weight, self.z_in.bias)
        for block in self.blocks:
            h = block.infer(h)
        if self.upsample:
            h = self.up.infer(h)
        return h


class LadderVAE(nn.Module):
    """Hierarchical VAE with a bottom-up (inference) and a top-down (generative) path.

    Maps an image (B, in_channels, [Z,] Y, X) to features (B, features, [Z,] Y, X)
    and the KL of every level. See the module docstring for the exact layout.

    Parameters
    ----------
    in_channels : int
        Channels of the input image.
    n_levels : int
        Number of latent levels (>= 1).
    latent_channels : int or sequence of int
        Latent channels per level (one int for all, or one per level, index 0 = finest).
    features : int
        Width of the deterministic features.
    blocks_per_level : int, default 1
        Gated residual blocks per level on each path.
    downsample_every : int, default 2
        Level ``l`` halves the resolution when ``l % downsample_every == 0``
        (levels 0, 2, 4, ... by default; 1 = every level; <= 0 = never).
    batch_norm : bool, default True
    dropout : float, default 0.0
        Passed to every gated residual block.
    deactivated : sequence of int, optional
        Levels (index 0 = finest, never the top) whose posterior takes no bottom-up
        information (HDN_3-6): it equals the level's conditional prior, the level adds
        no KL, and prediction should take its mean (``use_mean``).
    spatial_dims : {2, 3}, default 2
        Images (B, C, Y, X) or volumes (B, C, Z, Y, X); downsampling halves Z too
        unless ``z_pool`` says otherwise.
    z_pool : sequence of bool, optional
        3-D only: ``n_levels`` entries (index 0 = finest); ``z_pool[l]`` says whether
        level ``l``'s downsampling and the matching upsampling halve / double Z
        (it matters only where ``downsample[l]``). None = all True (isotropic).
    z_kernel : sequence of int, optional
        3-D only: ``n_levels`` odd Z extents of each level's convolutions (0 or
        None = as Y and X; the stem follows level 0, see the module docstring).
        None = all isotropic.
    downsample : sequence of bool, optional
        ``n_levels`` entries (index 0 = finest): which levels halve the resolution, in place of
        ``downsample_every``. ``[False] + [True] * 7`` is the ladder of the reference implementation
        (krulllab/COSDD) at its default 256 px training crop, level 0 at the input's resolution
        (``scripts/benchmark_reference.py``).

    Attributes
    ----------
    n_levels : int
    latent_channels : list of int
    features : int
    downsample : list of bool
        Whether level ``l`` changes resolution (index 0 = finest).
    deactivated : list of bool
        Whether level ``l`` is deactivated.
    size_step : int
        ``2 ** sum(downsample)``; every input Y and X size must be a multiple of it.
    size_steps : tuple of int
        The step per spatial axis, (Y, X) or (Z, Y, X); Z's counts only the levels
        that downsample with ``z_pool``.
    receptive_fields : tuple of int
        Per spatial axis, (Y, X) or (Z, Y, X): an upper bound on the distance between
        an output feature and an input pixel that can change it, through every path
        (bottom-up, posteriors, top-down); borders aside it is reached along the
        longest path. Computed analytically (:class:`bmz_cosdd.nn.blocks.Reach`).
    z_pool : list of bool
        As given (all True by default and in 2-D).
    z_kernel : list of int
        As given, 0 for the Y/X extent (all 0 by default and in 2-D).
    spatial_dims : int

    Notes
    -----
    ``forward``, ``bottom_up``, ``top_down``, ``latent_shapes``, ``prepare_sampling``
    and ``sample_features`` are TorchScript-compatible; ``sample_prior`` is eager only.
    In training mode batch normalisation couples the samples of a batch; use ``eval()``
    for per-sample reproducibility (and for the inference form of ``sample_features``).

    Examples
    --------
    >>> vae = LadderVAE(1, n_levels=4, latent_channels=8, features=16).eval()
    >>> features, kl = vae(torch.zeros(1, 1, 32, 48))
    >>> features.shape, len(kl)
    (torch.Size([1, 16, 32, 48]), 4)
    >>> thin = LadderVAE(1, 4, 2, 4, spatial_dims=3, z_pool=[False, False, True, True], z_kernel=[1, 1, 3, 3])
    >>> thin.size_steps
    (2, 4, 4)
    >>> thin.eval()(torch.zeros(1, 1, 6, 16, 16))[0].shape
    torch.Size([1, 4, 6, 16, 16])
    """

    # size_steps and receptive_fields (tuples) get their TorchScript types from their values.
    n_levels: int
    latent_channels: List[int]
    features: int
    downsample: List[bool]
    deactivated: List[bool]
    size_step: int
    z_pool: List[bool]
    z_kernel: List[int]
    spatial_dims: Final[int]

    def __init__(
        self,
        in_channels: int,
        n_levels: int,
        latent_channels: Union[int, Sequence[int]],
        features: int,
        blocks_per_level: int = 1,
        downsample_every: int = 2,
        batch_norm: bool = True,
        dropout: float = 0.0,
        deactivated: Optional[Sequence[int]] = None,
        spatial_dims: int = 2,
        z_pool: Optional[Sequence[bool]] = None,
        z_kernel: Optional[Sequence[int]] = None,
        downsample: Optional[Sequence[bool]] = None,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if n_levels < 1:
            raise ValueError(f"n_levels must be >= 1, got {n_levels}")
        if isinstance(latent_channels, int):
            channels = [latent_channels] * n_levels
        else:
            channels = [int(c) for c in latent_channels]
        if len(channels) != n_levels:
            raise ValueError(f"latent_channels has {len(channels)} entries for {n_levels} levels")
        self.n_levels = n_levels
        self.latent_channels = channels
        self.features = features
        if downsample is None:
            self.downsample = ladder_downsampling(n_levels, downsample_every)
        elif len(downsample) != n_levels:
            raise ValueError(f"downsample has {len(downsample)} entries for {n_levels} levels")
        else:
            self.downsample = [bool(d) for d in downsample]
        self.size_step = 2 ** sum(self.downsample)
        off = sorted({int(level) for level in (deactivated or [])})
        if off and (off[0] < 0 or off[-1] >= n_levels - 1):
            raise ValueError(f"deactivated levels must be in 0..{n_levels - 2} (the top cannot be), got {off}")
        self.deactivated = [level in off for level in range(n_levels)]
        z_pools, z_kernels = anisotropy(z_pool, z_kernel, n_levels, n_levels, spatial_dims)
        self.z_pool = z_pools
        self.z_kernel = z_kernels
        yx_field = _ladder_receptive_field(
            self.downsample, self.downsample, self.deactivated, [3] * n_levels, 5, blocks_per_level
        )
        if spatial_dims == 3:
            z_halved = [d and p for d, p in zip(self.downsample, z_pools)]
            z_field = _ladder_receptive_field(
                self.downsample, z_halved, self.deactivated, [k or 3 for k in z_kernels],
                _stem_z_kernel(z_kernels[0]) or 5, blocks_per_level,
            )
            self.size_steps = (2 ** sum(z_halved), self.size_step, self.size_step)
            self.receptive_fields = (z_field, yx_field, yx_field)
        else:
            self.size_steps = (self.size_step, self.size_step)
            self.receptive_fields = (yx_field, yx_field)

        self.stem = same_conv(in_channels, features, 5, spatial_dims, _stem_z_kernel(z_kernels[0]))
        self.bu_levels = nn.ModuleList(
            [
                _BottomUpLevel(
                    features, blocks_per_level, self.downsample[level], batch_norm, dropout, spatial_dims,
                    z_pools[level], z_kernels[level],
                )
                for level in range(n_levels)
            ]
        )
        top = n_levels - 1
        self.top = _TopLevel(
            features, channels[top], blocks_per_level, self.downsample[top], batch_norm, dropout, spatial_dims,
            z_pools[top], z_kernels[top],
        )
        # Ordered from just below the top down to level 0, the order of the top-down pass.
        self.td_levels = nn.ModuleList(
            [
                _TopDownLevel(
                    features, channels[level], blocks_per_level, self.downsample[level], batch_norm, dropout,
                    deactivated=self.deactivated[level], spatial_dims=spatial_dims, pool_z=z_pools[level],
                    z_kernel=z_kernels[level],
                )
                for level in range(top - 1, -1, -1)
            ]
        )

    def bottom_up(self, x: Tensor) -> List[Tensor]:
        """Deterministic bottom-up features, one per level, index 0 = finest.

        Parameters
        ----------
        x : Tensor
            (B, in_channels, [Z,] Y, X), every spatial size a multiple of its ``size_steps`` entry.
        """
        check_spatial_size(x, [s for s in self.size_steps], self.spatial_dims)
        h = self.stem(x)
        out: List[Tensor] = []
        for level in self.bu_levels:
            h = level(h)
            out.append(h)
        return out

    def top_down(
        self,
        bu: List[Tensor],
        eps: Optional[List[Tensor]] = None,
        use_mean: Optional[List[bool]] = None,
        compute_kl: bool = True,
    ) -> Tuple[Tensor, List[Tensor]]:
        """Top-down pass: sample every level's latent from the posterior and decode.

        Parameters
        ----------
        bu : list of Tensor
            Output of :meth:`bottom_up` (possibly repeated along the batch).
        eps : list of Tensor, optional
            One standard-normal tensor per level (index 0 = finest) of the shape of
            that level's latent, (B, latent_channels[l], *spatial_l), used instead of
            internal ``torch.randn_like`` draws.
        use_mean : list of bool, optional
            ``use_mean[l]`` takes the posterior mean at level ``l`` instead of a sample.
        compute_kl : bool, default True
            False skips the priors and returns an empty KL list (prediction).

        Returns
        -------
        features : Tensor
            (B, features, [Z,] Y, X) at input resolution.
        kl : list of Tensor
            Analytic KL(q || p) per level (index 0 = finest), each (B,), summed over
            the level's (C, [Z,] Y, X); empty when ``compute_kl`` is False.
        """
        n = self.n_levels
        if len(bu) != n:
            raise ValueError("bu must hold one tensor per level")
        if eps is not None and len(eps) != n:
            raise ValueError("eps must hold one tensor per level")
        if use_mean is not None and len(use_mean) != n:
            raise ValueError("use_mean must hold one flag per level")

        level = n - 1
        h, kl = self.top(bu[level], _eps_at(eps, level), _flag_at(use_mean, level), compute_kl)
        kls: List[Tensor] = []
        if kl is not None:
            kls.append(kl)
        for td in self.td_levels:
            level -= 1
            h, kl = td(h, bu[level], _eps_at(eps, level), _flag_at(use_mean, level), compute_kl)
            if kl is not None:
                kls.insert(0, kl)
        return h, kls

    def forward(self, x: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """``top_down(bottom_up(x))`` with fresh posterior samples: (features, kl per level)."""
        return self.top_down(self.bottom_up(x))

    def prepare_sampling(self, bu: List[Tensor]) -> List[Tensor]:
        """What :meth:`sample_features` needs of the bottom-up features, computed once per image.

        Parameters
        ----------
        bu : list of Tensor
            Output of :meth:`bottom_up` for B images (not repeated).

        Returns
        -------
        list of Tensor
            One per level (index 0 = finest): the top level's posterior parameters
            (B, 2 * latent_channels[top], ...); below it, the bottom-up half of the
            level's merge convolution (B, features, ...), empty for a deactivated level.
        """
        if len(bu) != self.n_levels:
            raise ValueError("bu must hold one tensor per level")
        top = self.n_levels - 1
        prepared: List[Tensor] = []
        for i, td in enumerate(self.td_levels):
            prepared.insert(0, td.prepare(bu[top - 1 - i]))
        prepared.append(self.top.prepare(bu[top]))
        return prepared

    def sample_features(
        self, prepared: List[Tensor], eps: List[Tensor], use_mean: Optional[List[bool]] = None
    ) -> Tensor:
        """``top_down(bu, eps, use_mean, compute_kl=False)[0]`` for k posterior samples of each image, faster.

        The inference form (:mod:`bmz_cosdd.nn.fast_inference`): batch norm folded in
        evaluation mode, channels-last activations, the image-only parts of every level
        taken from ``prepared``. Equal to the training form up to float rounding.

        Parameters
        ----------
        prepared : list of Tensor
            :meth:`prepare_sampling` of B images.
        eps : list of Tensor
            One standard-normal tensor per level (index 0 = finest), (k * B,
            latent_channels[l], *spatial_l): sample ``i`` of image ``b`` at row ``i * B + b``.
        use_mean : list of bool, optional
            ``use_mean[l]`` takes the posterior mean at level ``l`` instead of a sample.

        Returns
        -------
        Tensor
            (k * B, features, [Z,] Y, X) in channels-last memory, rows as in ``eps``.
        """
        n = self.n_levels
        if len(prepared) != n or len(eps) != n:
            raise ValueError("prepared and eps must hold one tensor per level")
        if use_mean is not None and len(use_mean) != n:
            raise ValueError("use_mean must hold one flag per level")
        level = n - 1
        h = self.top.infer(prepared[level], eps[level], _flag_at(use_mean, level))
        for td in self.td_levels:
            level -= 1
            h = td.infer(h, prepared[level], eps[level], _flag_at(use_mean, level))
        return h

    @torch.jit.export
    def latent_shapes(self, spatial: List[int]) -> List[List[int]]:
        """``[C, *spatial_l]`` of every level's latent (index 0 = finest) for an input of spatial size ``spatial``.

        ``spatial`` is ([Z,] Y, X), one size per spatial dimension of the model.
        """
        if len(spatial) != self.spatial_dims:
            raise ValueError(f"spatial must hold {self.spatial_dims} sizes, got {len(spatial)}")
        sizes = [s for s in spatial]
        shapes: List[List[int]] = []
        for level in range(self.n_levels):
            if self.downsample[level]:
                keep_z = self.spatial_dims == 3 and not self.z_pool[level]
                sizes = [s if axis == 0 and keep_z else (s + 1) // 2 for axis, s in enumerate(sizes)]
            shapes.append([self.latent_channels[level]] + sizes)
        return shapes

    def sample_prior(self, n: int, spatial: Sequence[int], generator: Optional[torch.Generator] = None) -> Tensor:
        """Features (n, features, *spatial) decoded from latents drawn from the prior.

        ``spatial`` is ([Z,] Y, X), every size a multiple of its ``size_steps`` entry. Eager only.
        ``generator`` (optional) is used for every draw; the draws are made on its
        device and moved to the model's device.
        """
        sizes = [int(s) for s in spatial]
        shapes = self.latent_shapes(sizes)
        check_multiples(sizes, list(self.size_steps))
        device = self.top.prior_mean.device
        dtype = self.top.prior_mean.dtype
        gen_device = device if generator is None else generator.device

        def draw(mu: Tensor, logvar: Tensor) -> Tensor:
            noise = torch.randn(mu.shape, generator=generator, device=gen_device, dtype=dtype).to(device)
            return mu + torch.exp(0.5 * logvar) * noise

        like = torch.empty([n] + shapes[-1], device=device, dtype=dtype)
        h = self.top.from_z(draw(*self.top.prior(like)))
        for td in self.td_levels:
            h = td.from_z(h, draw(*td.prior(h)))
        return h
