"""One U-Net for the Noise2Void family and COSDD's direct denoiser.

Per level: two "same" convolutions (each + batch norm + ReLU); max-pooling down
(or N2V2's max-blur-pool); bilinear x2 + 1x1 convolution up; skip connections by
concatenation; a final 1x1 convolution. Level ``i`` has ``features * 2**i``
channels, the bottleneck ``features * 2**depth``.
"""


from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bmz_cosdd.nn.blocks import Upsample, check_odd_kernel

__all__ = ["UNet", "unet_receptive_field"]


def unet_receptive_field(depth: int, kernel_size: int = 3, blur_pool: bool = False, top_skip: bool = True) -> int:
    """Half-width, in input pixels, of the U-Net's receptive field.

    The largest distance (along Y or X) between an output pixel and an input pixel
    that can change it, maximised over output positions (the pooling grid makes the
    field slightly asymmetric and position dependent). Use it as the tiling halo.

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
    def __init__(self, cin: int, cout: int, kernel_size: int, batch_norm: bool) -> None:
        super().__init__()
        pad = kernel_size // 2
        layers: List[nn.Module] = []
        for c in (cin, cout):
            layers.append(nn.Conv2d(c, cout, kernel_size, padding=pad, bias=not batch_norm))
            layers.append(nn.BatchNorm2d(cout) if batch_norm else nn.Identity())
            layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _MaxBlurPool(nn.Module):
    """N2V2's max-blur-pool: 2x2 max-pool with stride 1, then a [1, 2, 1] x [1, 2, 1] / 16 blur with stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(k, k) / 16.0
        self.channels = channels
        self.register_buffer("kernel", kernel.expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        # Replicate padding keeps the size and never reaches outside the image.
        x = F.max_pool2d(F.pad(x, [0, 1, 0, 1], mode="replicate"), 2, stride=1)
        x = F.pad(x, [1, 1, 1, 1], mode="replicate")
        return F.conv2d(x, self.kernel, stride=2, groups=self.channels)


class _Down(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size: int, batch_norm: bool, blur_pool: bool) -> None:
        super().__init__()
        self.conv = _ConvBlock(cin, cout, kernel_size, batch_norm)
        self.pool = _MaxBlurPool(cout) if blur_pool else nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        skip = self.conv(x)
        return skip, self.pool(skip)


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size: int, batch_norm: bool, use_skip: bool) -> None:
        super().__init__()
        self.use_skip = use_skip
        self.up = Upsample(cin, cout)
        self.conv = _ConvBlock(2 * cout if use_skip else cout, cout, kernel_size, batch_norm)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        if self.use_skip:
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)


class UNet(nn.Module):
    """U-Net with optional N2V2 changes (max-blur-pool, no top-level skip).

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

    Attributes
    ----------
    size_step : int
        ``2 ** depth``; input Y and X must be multiples of it.
    receptive_field : int
        Half-width of the receptive field in input pixels: an output pixel can only
        depend on input pixels at most this far away along Y and X (the halo to
        use when tiling). See :func:`unet_receptive_field`.

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
    ) -> None:
        super().__init__()
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
                _Down(in_channels if i == 0 else widths[i - 1], widths[i], kernel_size, batch_norm, blur_pool)
                for i in range(depth)
            ]
        )
        self.bottleneck = _ConvBlock(widths[depth - 1], widths[depth], kernel_size, batch_norm)
        # Deepest first, the order of the decoder pass.
        self.ups = nn.ModuleList(
            [
                _Up(widths[i + 1], widths[i], kernel_size, batch_norm, use_skip=(i > 0 or top_skip))
                for i in range(depth - 1, -1, -1)
            ]
        )
        self.out = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, Y, X) -> (B, out_channels, Y, X); Y, X multiples of ``size_step``."""
        if x.shape[-2] % self.size_step != 0 or x.shape[-1] % self.size_step != 0:
            raise ValueError(
                f"input Y and X must be multiples of {self.size_step}, got {x.shape[-2]} x {x.shape[-1]}"
            )
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
