"""Small convolutional building blocks shared by the VAEs and the U-Net, and the
factories that pick a layer's 2-D or 3-D class.

All modules are TorchScript-compatible (``torch.jit.script``) and take tensors
shaped (B, C, Y, X), or (B, C, Z, Y, X) with ``spatial_dims=3``.
"""


from typing import Final, List, Type, Union

import torch
from torch import Tensor, nn

__all__ = [
    "GatedResBlock",
    "Downsample",
    "Upsample",
    "check_odd_kernel",
    "check_multiples",
    "check_spatial_dims",
    "check_spatial_size",
    "conv_class",
    "batch_norm_class",
    "max_pool_class",
    "channel_dropout_class",
    "sum_except_batch",
]


def check_odd_kernel(kernel_size: int) -> None:
    """Raise ``ValueError`` unless ``kernel_size`` is a positive odd integer ("same" padding needs it)."""
    if kernel_size < 1 or kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")


def check_spatial_dims(spatial_dims: int) -> int:
    """Return ``spatial_dims`` as an int; ``ValueError`` unless it is 2 (Y, X) or 3 (Z, Y, X)."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return int(spatial_dims)


def conv_class(spatial_dims: int) -> Union[Type[nn.Conv2d], Type[nn.Conv3d]]:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    return nn.Conv3d if check_spatial_dims(spatial_dims) == 3 else nn.Conv2d


def batch_norm_class(spatial_dims: int) -> Union[Type[nn.BatchNorm2d], Type[nn.BatchNorm3d]]:
    """``nn.BatchNorm2d`` or ``nn.BatchNorm3d``."""
    return nn.BatchNorm3d if check_spatial_dims(spatial_dims) == 3 else nn.BatchNorm2d


def max_pool_class(spatial_dims: int) -> Union[Type[nn.MaxPool2d], Type[nn.MaxPool3d]]:
    """``nn.MaxPool2d`` or ``nn.MaxPool3d``."""
    return nn.MaxPool3d if check_spatial_dims(spatial_dims) == 3 else nn.MaxPool2d


def channel_dropout_class(spatial_dims: int) -> Union[Type[nn.Dropout2d], Type[nn.Dropout3d]]:
    """``nn.Dropout2d`` or ``nn.Dropout3d`` (drops whole channels)."""
    return nn.Dropout3d if check_spatial_dims(spatial_dims) == 3 else nn.Dropout2d


def check_multiples(sizes: List[int], step: int) -> None:
    """Raise ``ValueError`` unless every spatial size ([Z,] Y, X) is a multiple of ``step``.

    Examples
    --------
    >>> check_multiples([8, 16, 18], 4)
    Traceback (most recent call last):
    ...
    ValueError: input Z, Y and X must be multiples of 4, got 8 x 16 x 18
    """
    for size in sizes:
        if size % step != 0:
            names = ["Z", "Y", "X"][3 - len(sizes):]
            axes = ", ".join(names[:-1]) + " and " + names[-1]
            got = " x ".join([str(s) for s in sizes])
            raise ValueError(f"input {axes} must be multiples of {step}, got {got}")


def check_spatial_size(x: Tensor, step: int, spatial_dims: int) -> None:
    """Raise ``ValueError`` unless ``x`` is (B, C, [Z,] Y, X) with every spatial size a multiple of ``step``."""
    if x.dim() != spatial_dims + 2:
        names = ["Z", "Y", "X"][3 - spatial_dims:]
        raise ValueError(f"expected a (B, C, {', '.join(names)}) input, got {x.dim()} dimensions")
    check_multiples(x.shape[2:], step)


def sum_except_batch(t: Tensor) -> Tensor:
    """Sum over every dimension but the first: (B, ...) -> (B,)."""
    return t.sum(dim=[d for d in range(1, t.dim())])


def _norm(channels: int, batch_norm: bool, spatial_dims: int) -> nn.Module:
    return batch_norm_class(spatial_dims)(channels) if batch_norm else nn.Identity()


class GatedResBlock(nn.Module):
    """Residual block: (conv, batch norm, Mish) x 2, a gated unit, added to the input.

    The gated unit is a 1x1 convolution to ``2 * channels`` split into ``a`` and ``b``
    and combined as ``a * sigmoid(b)``; the result is added to the block's input, so
    the block keeps the number of channels and the spatial size.

    Parameters
    ----------
    channels : int
        Number of input and output channels.
    kernel_size : int, default 3
        Odd size of the two spatial convolutions ("same" zero padding).
    batch_norm : bool, default True
        Batch normalisation after each convolution; without it the convolutions get a bias.
    dropout : float, default 0.0
        Dropout probability applied after the first activation.
    spatial_dims : {2, 3}, default 2
        Tensors (B, C, Y, X) or (B, C, Z, Y, X).

    Examples
    --------
    >>> block = GatedResBlock(8)
    >>> block(torch.zeros(2, 8, 16, 16)).shape
    torch.Size([2, 8, 16, 16])
    """

    spatial_dims: Final[int]

    def __init__(
        self, channels: int, kernel_size: int = 3, batch_norm: bool = True, dropout: float = 0.0, spatial_dims: int = 2
    ) -> None:
        super().__init__()
        check_odd_kernel(kernel_size)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        conv = conv_class(spatial_dims)
        pad = kernel_size // 2
        self.channels = channels
        self.conv1 = conv(channels, channels, kernel_size, padding=pad, bias=not batch_norm)
        self.norm1 = _norm(channels, batch_norm, spatial_dims)
        self.conv2 = conv(channels, channels, kernel_size, padding=pad, bias=not batch_norm)
        self.norm2 = _norm(channels, batch_norm, spatial_dims)
        self.act = nn.Mish()
        self.drop = nn.Dropout(dropout)
        self.gate = conv(channels, 2 * channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.norm1(self.conv1(x)))
        h = self.drop(h)
        h = self.act(self.norm2(self.conv2(h)))
        g = self.gate(h)
        c = self.channels
        return x + g[:, :c] * torch.sigmoid(g[:, c:])


class Downsample(nn.Module):
    """Halve every spatial size (Y and X, and Z in 3-D) with a strided 3x3 convolution (stride 2, padding 1).

    An input of size n gives ceil(n / 2); even sizes are halved exactly.

    Parameters
    ----------
    cin, cout : int
        Input and output channels.
    spatial_dims : {2, 3}, default 2
        Tensors (B, C, Y, X) or (B, C, Z, Y, X).
    """

    spatial_dims: Final[int]

    def __init__(self, cin: int, cout: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.conv = conv_class(spatial_dims)(cin, cout, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double every spatial size: bi- or trilinear interpolation (``align_corners=False``), then a 1x1 convolution.

    Interpolation rather than transposed convolution avoids checkerboard artefacts.

    Parameters
    ----------
    cin, cout : int
        Input and output channels.
    spatial_dims : {2, 3}, default 2
        Tensors (B, C, Y, X) (bilinear) or (B, C, Z, Y, X) (trilinear).
    """

    # Final: TorchScript compiles only the branch of this module's dimensionality.
    spatial_dims: Final[int]

    def __init__(self, cin: int, cout: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.conv = conv_class(spatial_dims)(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        # The aten ops, not F.interpolate: scripting F.interpolate compiles every mode,
        # including ops (lanczos) that torch 2.0 - deepImageJ's libtorch - cannot load.
        # A scale factor rather than an output size: ONNX then gets a Resize by scales,
        # which works for every input size (a size is traced as a constant).
        if self.spatial_dims == 3:
            x = torch.ops.aten.upsample_trilinear3d(x, None, False, [2.0, 2.0, 2.0])
        else:
            x = torch.ops.aten.upsample_bilinear2d(x, None, False, [2.0, 2.0])
        return self.conv(x)
