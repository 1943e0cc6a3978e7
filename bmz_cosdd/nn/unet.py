"""One U-Net for the Noise2Void family and COSDD's direct denoiser.

Per level: two "same" convolutions (each + batch norm + ReLU); max-pooling down
(or N2V2's max-blur-pool); bilinear x2 + 1x1 convolution up; skip connections by
concatenation; a final 1x1 convolution. Level ``i`` has ``features * 2**i``
channels, the bottleneck ``features * 2**depth``. With ``spatial_dims=3`` the same
network works on volumes (B, C, Z, Y, X): 3-D convolutions, pooling that halves
Z too and trilinear upsampling by default.

Anisotropic volumes (``spatial_dims=3``): ``z_pool[i]`` (one per pooling, level 0
= finest) says whether level ``i``'s pooling, and the matching upsampling, act on
Z; ``z_kernel[i]`` (levels 0 .. depth - 1, then the bottleneck) is the Z extent of
that level's convolutions (encoder and decoder alike). Thin stacks with a coarse
Z step use e.g. ``z_pool=[False, True]``, ``z_kernel=[1, 3, 3]`` as the nnU-Net rule
(Isensee et al., Nature Methods 2021) gives for a Z step 4x the pixel size: pool
Z and convolve along it only while its spacing is within 2x of the finest; see
:mod:`bmz_cosdd.nn.blocks`. The receptive field and the size step are then per
axis (``receptive_fields``, ``size_steps``).
"""


from typing import Final, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bmz_cosdd.nn.blocks import (
    Reach,
    Upsample,
    anisotropy,
    batch_norm_class,
    check_odd_kernel,
    check_spatial_dims,
    check_spatial_size,
    conv_class,
    max_pool_class,
    same_conv,
)

__all__ = ["UNet", "unet_receptive_field"]


def unet_receptive_field(
    depth: int,
    kernel_size: int = 3,
    blur_pool: bool = False,
    top_skip: bool = True,
    pool: Optional[Sequence[bool]] = None,
    kernels: Optional[Sequence[int]] = None,
) -> int:
    """Half-width, in input pixels, of the U-Net's receptive field along one axis.

    The largest distance along the axis between an output pixel and an input
    pixel that can change it, maximised over output positions (the pooling grid
    makes the field slightly asymmetric and position dependent) and over the paths
    through the network. Use it as the tiling halo.

    Parameters
    ----------
    depth, kernel_size, blur_pool, top_skip
        As for :class:`UNet`.
    pool : sequence of bool, optional
        ``depth`` entries: whether level ``i``'s pooling acts along this axis
        (default: every pooling does, as for Y and X).
    kernels : sequence of int, optional
        ``depth + 1`` extents of the convolutions along this axis, per level and
        then the bottleneck (default: ``kernel_size`` everywhere).

    Notes
    -----
    Computed by interval arithmetic (:class:`bmz_cosdd.nn.blocks.Reach`): a feature
    at grid index o with step s depends on input pixels ``s*o + lo .. s*o + hi``.
    """
    pools = [True] * depth if pool is None else [bool(p) for p in pool]
    extents = [kernel_size] * (depth + 1) if kernels is None else [int(k) for k in kernels]
    f = Reach()
    skips: List[Reach] = []
    for level in range(depth):
        f = f.conv(extents[level]).conv(extents[level])
        skips.append(f)
        if not pools[level]:
            continue
        if blur_pool:
            # max-pool 2 stride 1 (covers o, o+1), then 3-tap blur stride 2 (2o'-1 .. 2o'+1)
            f = Reach(f.lo - f.step, f.hi + 2 * f.step, 2 * f.step)
        else:
            f = Reach(f.lo, f.hi + f.step, 2 * f.step)  # max-pool 2 stride 2 covers 2o', 2o'+1
    f = f.conv(extents[depth]).conv(extents[depth])  # bottleneck
    for level in range(depth - 1, -1, -1):
        if pools[level]:
            f = f.up()
        if level > 0 or top_skip:
            f = f.merge(skips[level])
        f = f.conv(extents[level]).conv(extents[level])
    return f.halfwidth


class _ConvBlock(nn.Module):
    def __init__(
        self, cin: int, cout: int, kernel_size: int, batch_norm: bool, spatial_dims: int, z_kernel: int = 0
    ) -> None:
        super().__init__()
        norm = batch_norm_class(spatial_dims)
        layers: List[nn.Module] = []
        for c in (cin, cout):
            layers.append(same_conv(c, cout, kernel_size, spatial_dims, z_kernel, bias=not batch_norm))
            layers.append(norm(cout) if batch_norm else nn.Identity())
            layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _MaxBlurPool(nn.Module):
    """N2V2's max-blur-pool: max-pool 2 with stride 1, then a separable blur with stride 2.

    The blur is [1, 2, 1] along every pooled axis: [1, 2, 1] x [1, 2, 1] / 16 in 2-D,
    [1, 2, 1]^3 / 64 in 3-D; with ``pool_z=False`` Z is left alone (max-pool, blur
    and stride 1 along it).
    """

    spatial_dims: Final[int]

    def __init__(self, channels: int, spatial_dims: int = 2, pool_z: bool = True) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        pooled = [bool(pool_z)] + [True] * (spatial_dims - 1) if spatial_dims == 3 else [True] * spatial_dims
        k = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.ones([1] * spatial_dims)
        for axis, on in enumerate(pooled):
            if on:
                shape = [1] * spatial_dims
                shape[axis] = 3
                kernel = kernel * (k / 4.0).reshape(shape)
        self.channels = channels
        # F.pad lists the last axis first.
        self.max_pad = [p for on in pooled[::-1] for p in ([0, 1] if on else [0, 0])]
        self.blur_pad = [p for on in pooled[::-1] for p in ([1, 1] if on else [0, 0])]
        self.max_kernel = [2 if on else 1 for on in pooled]
        self.blur_stride = [2 if on else 1 for on in pooled]
        self.register_buffer("kernel", kernel.expand([channels, 1] + list(kernel.shape)).clone(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        # Replicate padding keeps the size and never reaches outside the image.
        x = F.pad(x, self.max_pad, mode="replicate")
        if self.spatial_dims == 3:
            x = F.max_pool3d(x, self.max_kernel, stride=1)
            return F.conv3d(
                F.pad(x, self.blur_pad, mode="replicate"), self.kernel, stride=self.blur_stride, groups=self.channels
            )
        x = F.max_pool2d(x, 2, stride=1)
        return F.conv2d(F.pad(x, self.blur_pad, mode="replicate"), self.kernel, stride=2, groups=self.channels)


def _max_pool(spatial_dims: int, pool_z: bool) -> nn.Module:
    if spatial_dims == 3 and not pool_z:
        return nn.MaxPool3d((1, 2, 2))
    return max_pool_class(spatial_dims)(2)


class _Down(nn.Module):
    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        batch_norm: bool,
        blur_pool: bool,
        spatial_dims: int,
        pool_z: bool = True,
        z_kernel: int = 0,
    ) -> None:
        super().__init__()
        self.conv = _ConvBlock(cin, cout, kernel_size, batch_norm, spatial_dims, z_kernel)
        self.pool = _MaxBlurPool(cout, spatial_dims, pool_z) if blur_pool else _max_pool(spatial_dims, pool_z)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        skip = self.conv(x)
        return skip, self.pool(skip)


class _Up(nn.Module):
    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        batch_norm: bool,
        use_skip: bool,
        spatial_dims: int,
        pool_z: bool = True,
        z_kernel: int = 0,
    ) -> None:
        super().__init__()
        self.use_skip = use_skip
        self.up = Upsample(cin, cout, spatial_dims, pool_z)
        self.conv = _ConvBlock(2 * cout if use_skip else cout, cout, kernel_size, batch_norm, spatial_dims, z_kernel)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        if self.use_skip:
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)


class UNet(nn.Module):
    """U-Net with optional N2V2 changes (max-blur-pool, no top-level skip).

    Maps (B, in_channels, [Z,] Y, X) to (B, out_channels, [Z,] Y, X).

    Parameters
    ----------
    in_channels, out_channels : int
    depth : int, default 3
        Number of poolings (>= 1).
    features : int, default 32
        Channels of the top level; doubled at every level down.
    kernel_size : int, default 3
        Odd size of the convolutions.
    batch_norm : bool, default True
    blur_pool : bool, default False
        Max-blur-pool (N2V2) instead of 2x2 max-pool.
    top_skip : bool, default True
        Keep the skip connection of the top (full-resolution) level; N2V2 drops it.
    residual : bool, default False
        Add the input to the output (needs ``in_channels == out_channels``).
    spatial_dims : {2, 3}, default 2
        Images (B, C, Y, X) or volumes (B, C, Z, Y, X).
    z_pool : sequence of bool, optional
        3-D only: ``depth`` entries, index 0 = finest pooling; whether that pooling
        and the matching upsampling halve / double Z too. None = all True (isotropic).
    z_kernel : sequence of int, optional
        3-D only: ``depth + 1`` odd Z extents of the convolutions of levels
        0 .. depth - 1 (encoder and decoder) and of the bottleneck; 0 or None =
        ``kernel_size``. None = all ``kernel_size`` (isotropic).

    Attributes
    ----------
    size_step : int
        ``2 ** depth``; every input Y and X size must be a multiple of it.
    size_steps : tuple of int
        The step per spatial axis, (Y, X) or (Z, Y, X): Z's is ``2 ** sum(z_pool)``.
    receptive_field : int
        Half-width of the receptive field in input pixels along Y and X: an output
        pixel can only depend on input pixels at most this far away (the halo to
        use when tiling). See :func:`unet_receptive_field`.
    receptive_fields : tuple of int
        The half-width per spatial axis, (Y, X) or (Z, Y, X).
    z_pool : list of bool
        As given (all True by default and in 2-D).
    z_kernel : list of int
        As given, 0 for the Y/X extent (all 0 by default and in 2-D).
    spatial_dims : int

    Examples
    --------
    >>> net = UNet(1, 1, depth=2, features=8)
    >>> net(torch.zeros(1, 1, 32, 40)).shape
    torch.Size([1, 1, 32, 40])
    >>> thin = UNet(1, 1, depth=2, features=4, spatial_dims=3, z_pool=[False, False], z_kernel=[1, 3, 3])
    >>> thin.size_steps, thin.receptive_fields
    ((1, 4, 4), (6, 26, 26))
    >>> thin(torch.zeros(1, 1, 3, 16, 16)).shape
    torch.Size([1, 1, 3, 16, 16])
    """

    # size_steps and receptive_fields (tuples) get their TorchScript types from their values.
    size_step: int
    receptive_field: int
    depth: int
    features: int
    z_pool: List[bool]
    z_kernel: List[int]
    spatial_dims: Final[int]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        depth: int = 3,
        features: int = 32,
        kernel_size: int = 3,
        batch_norm: bool = True,
        blur_pool: bool = False,
        top_skip: bool = True,
        residual: bool = False,
        spatial_dims: int = 2,
        z_pool: Optional[Sequence[bool]] = None,
        z_kernel: Optional[Sequence[int]] = None,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        check_odd_kernel(kernel_size)
        if residual and in_channels != out_channels:
            raise ValueError("residual=True needs in_channels == out_channels")
        z_pools, z_kernels = anisotropy(z_pool, z_kernel, depth, depth + 1, spatial_dims)
        self.z_pool = z_pools
        self.z_kernel = z_kernels
        self.residual = residual
        self.size_step = 2**depth
        self.depth = depth
        self.features = features
        self.receptive_field = unet_receptive_field(depth, kernel_size, blur_pool, top_skip)
        if spatial_dims == 3:
            z_extents = [k or kernel_size for k in z_kernels]
            z_field = unet_receptive_field(depth, kernel_size, blur_pool, top_skip, z_pools, z_extents)
            self.size_steps = (2 ** sum(z_pools), self.size_step, self.size_step)
            self.receptive_fields = (z_field, self.receptive_field, self.receptive_field)
        else:
            self.size_steps = (self.size_step, self.size_step)
            self.receptive_fields = (self.receptive_field, self.receptive_field)

        widths = [features * 2**i for i in range(depth + 1)]
        self.downs = nn.ModuleList(
            [
                _Down(
                    in_channels if i == 0 else widths[i - 1], widths[i], kernel_size, batch_norm, blur_pool,
                    spatial_dims, z_pools[i], z_kernels[i],
                )
                for i in range(depth)
            ]
        )
        self.bottleneck = _ConvBlock(
            widths[depth - 1], widths[depth], kernel_size, batch_norm, spatial_dims, z_kernels[depth]
        )
        # Deepest first, the order of the decoder pass.
        self.ups = nn.ModuleList(
            [
                _Up(
                    widths[i + 1], widths[i], kernel_size, batch_norm, use_skip=(i > 0 or top_skip),
                    spatial_dims=spatial_dims, pool_z=z_pools[i], z_kernel=z_kernels[i],
                )
                for i in range(depth - 1, -1, -1)
            ]
        )
        self.out = conv_class(spatial_dims)(widths[0], out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, [Z,] Y, X) -> (B, out_channels, [Z,] Y, X); sizes multiples of ``size_steps``."""
        check_spatial_size(x, [s for s in self.size_steps], self.spatial_dims)
        skips: List[Tensor] = []
        h = x
        for down in self.downs:
            skip, h = down(h)
            skips.append(skip)
        h = self.bottleneck(h)
        i = len(skips)
        for up in self.ups:
            i -= 1
            h = up(h, skips[i])
        y = self.out(h)
        if self.residual:
            y = y + x
        return y
