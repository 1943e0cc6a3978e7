"""One U-Net for the Noise2Void family and COSDD's direct denoiser.

Per level: two "same" convolutions (each + batch norm + ReLU); max-pooling down
(or N2V2's max-blur-pool); bilinear x2 + 1x1 convolution up; skip connections by
concatenation; a final 1x1 convolution. Level ``i`` has ``features * 2**i``
channels, the bottleneck ``features * 2**depth``. With ``spatial_dims=3`` the same
network works on volumes (B, C, Z, Y, X): 3-D convolutions, isotropic pooling
(Z is halved too) and trilinear upsampling.
"""


from typing import Final, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bmz_cosdd.nn.blocks import (
    Upsample,
    batch_norm_class,
    check_odd_kernel,
    check_spatial_dims,
    check_spatial_size,
    conv_class,
    max_pool_class,
)

__all__ = ["UNet", "unet_receptive_field"]


def unet_receptive_field(depth: int, kernel_size: int = 3, blur_pool: bool = False, top_skip: bool = True) -> int:
    """Half-width, in input pixels, of the U-Net's receptive field.

    The largest distance along one axis (Y, X, and Z in 3-D: pooling is isotropic)
    between an output pixel and an input pixel that can change it, maximised over
    output positions (the pooling grid makes the field slightly asymmetric and
    position dependent). Use it as the tiling halo.

    Computed by interval arithmetic: a feature at grid index o with stride s
    depends on input pixels ``s*o + lo .. s*o + hi``.
    """
    r = (kernel_size - 1) // 2
    lo, hi, s = 0, 0, 1
    skips: List[Tuple[int, int]] = []
    for _ in range(depth):
        lo, hi = lo - 2 * r * s, hi + 2 * r * s  # two convolutions
        skips.append((lo, hi))
        if blur_pool:
            # max-pool 2 stride 1 (covers o, o+1), then 3-tap blur stride 2 (2o'-1 .. 2o'+1)
            lo, hi = lo - s, hi + 2 * s
        else:
            hi += s  # max-pool 2 stride 2 covers 2o', 2o'+1
        s *= 2
    lo, hi = lo - 2 * r * s, hi + 2 * r * s  # bottleneck
    for level in range(depth - 1, -1, -1):
        # bilinear x2 (align_corners=False): fine index p reads coarse p/2 - 1 .. (p+1)/2
        lo, hi = lo - s, hi + s // 2
        s //= 2
        if level > 0 or top_skip:
            lo, hi = min(lo, skips[level][0]), max(hi, skips[level][1])
        lo, hi = lo - 2 * r * s, hi + 2 * r * s
    return max(-lo, hi)


class _ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size: int, batch_norm: bool, spatial_dims: int) -> None:
        super().__init__()
        pad = kernel_size // 2
        conv, norm = conv_class(spatial_dims), batch_norm_class(spatial_dims)
        layers: List[nn.Module] = []
        for c in (cin, cout):
            layers.append(conv(c, cout, kernel_size, padding=pad, bias=not batch_norm))
            layers.append(norm(cout) if batch_norm else nn.Identity())
            layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _MaxBlurPool(nn.Module):
    """N2V2's max-blur-pool: max-pool 2 with stride 1, then a separable blur with stride 2.

    The blur is [1, 2, 1] along every axis: [1, 2, 1] x [1, 2, 1] / 16 in 2-D,
    [1, 2, 1]^3 / 64 in 3-D.
    """

    spatial_dims: Final[int]

    def __init__(self, channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        k = torch.tensor([1.0, 2.0, 1.0])
        kernel = k
        for _ in range(spatial_dims - 1):
            kernel = kernel.unsqueeze(-1) * k
        kernel = kernel / 4.0**spatial_dims
        self.channels = channels
        self.max_pad = [0, 1] * spatial_dims
        self.blur_pad = [1, 1] * spatial_dims
        self.register_buffer("kernel", kernel.expand([channels, 1] + list(kernel.shape)).clone(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        # Replicate padding keeps the size and never reaches outside the image.
        x = F.pad(x, self.max_pad, mode="replicate")
        if self.spatial_dims == 3:
            x = F.max_pool3d(x, 2, stride=1)
            return F.conv3d(F.pad(x, self.blur_pad, mode="replicate"), self.kernel, stride=2, groups=self.channels)
        x = F.max_pool2d(x, 2, stride=1)
        return F.conv2d(F.pad(x, self.blur_pad, mode="replicate"), self.kernel, stride=2, groups=self.channels)


class _Down(nn.Module):
    def __init__(
        self, cin: int, cout: int, kernel_size: int, batch_norm: bool, blur_pool: bool, spatial_dims: int
    ) -> None:
        super().__init__()
        self.conv = _ConvBlock(cin, cout, kernel_size, batch_norm, spatial_dims)
        self.pool = _MaxBlurPool(cout, spatial_dims) if blur_pool else max_pool_class(spatial_dims)(2)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        skip = self.conv(x)
        return skip, self.pool(skip)


class _Up(nn.Module):
    def __init__(
        self, cin: int, cout: int, kernel_size: int, batch_norm: bool, use_skip: bool, spatial_dims: int
    ) -> None:
        super().__init__()
        self.use_skip = use_skip
        self.up = Upsample(cin, cout, spatial_dims)
        self.conv = _ConvBlock(2 * cout if use_skip else cout, cout, kernel_size, batch_norm, spatial_dims)

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

    Attributes
    ----------
    size_step : int
        ``2 ** depth``; every input spatial size ([Z,] Y, X) must be a multiple of it.
    receptive_field : int
        Half-width of the receptive field in input pixels: an output pixel can only
        depend on input pixels at most this far away along every axis (the halo to
        use when tiling). See :func:`unet_receptive_field`.
    spatial_dims : int

    Examples
    --------
    >>> net = UNet(1, 1, depth=2, features=8)
    >>> net(torch.zeros(1, 1, 32, 40)).shape
    torch.Size([1, 1, 32, 40])
    """

    size_step: int
    receptive_field: int
    depth: int
    features: int
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
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        check_odd_kernel(kernel_size)
        if residual and in_channels != out_channels:
            raise ValueError("residual=True needs in_channels == out_channels")
        self.residual = residual
        self.size_step = 2**depth
        self.depth = depth
        self.features = features
        self.receptive_field = unet_receptive_field(depth, kernel_size, blur_pool, top_skip)

        widths = [features * 2**i for i in range(depth + 1)]
        self.downs = nn.ModuleList(
            [
                _Down(
                    in_channels if i == 0 else widths[i - 1], widths[i], kernel_size, batch_norm, blur_pool,
                    spatial_dims,
                )
                for i in range(depth)
            ]
        )
        self.bottleneck = _ConvBlock(widths[depth - 1], widths[depth], kernel_size, batch_norm, spatial_dims)
        # Deepest first, the order of the decoder pass.
        self.ups = nn.ModuleList(
            [
                _Up(
                    widths[i + 1], widths[i], kernel_size, batch_norm, use_skip=(i > 0 or top_skip),
                    spatial_dims=spatial_dims,
                )
                for i in range(depth - 1, -1, -1)
            ]
        )
        self.out = conv_class(spatial_dims)(widths[0], out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, [Z,] Y, X) -> (B, out_channels, [Z,] Y, X); sizes multiples of ``size_step``."""
        check_spatial_size(x, self.size_step, self.spatial_dims)
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
