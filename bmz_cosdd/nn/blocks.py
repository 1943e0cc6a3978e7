"""Small convolutional building blocks shared by the ladder VAE and the U-Net.

All modules are TorchScript-compatible (``torch.jit.script``) and take tensors
shaped (B, C, Y, X).
"""


import torch
from torch import Tensor, nn

__all__ = ["GatedResBlock", "Downsample", "Upsample", "check_odd_kernel"]


def check_odd_kernel(kernel_size: int) -> None:
    """Raise ``ValueError`` unless ``kernel_size`` is a positive odd integer ("same" padding needs it)."""
    if kernel_size < 1 or kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


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

    Examples
    --------
    >>> block = GatedResBlock(8)
    >>> block(torch.zeros(2, 8, 16, 16)).shape
    torch.Size([2, 8, 16, 16])
    """

    def __init__(self, channels: int, kernel_size: int = 3, batch_norm: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        check_odd_kernel(kernel_size)
        pad = kernel_size // 2
        self.channels = channels
        self.conv1 = nn.Conv2d(channels, channels, kernel_size, padding=pad, bias=not batch_norm)
        self.norm1 = _norm(channels, batch_norm)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size, padding=pad, bias=not batch_norm)
        self.norm2 = _norm(channels, batch_norm)
        self.act = nn.Mish()
        self.drop = nn.Dropout(dropout)
        self.gate = nn.Conv2d(channels, 2 * channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.norm1(self.conv1(x)))
        h = self.drop(h)
        h = self.act(self.norm2(self.conv2(h)))
        g = self.gate(h)
        c = self.channels
        return x + g[:, :c] * torch.sigmoid(g[:, c:])


class Downsample(nn.Module):
    """Halve Y and X with a strided 3x3 convolution (stride 2, padding 1).

    An input of size n gives ceil(n / 2); even sizes are halved exactly.

    Parameters
    ----------
    cin, cout : int
        Input and output channels.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double Y and X: bilinear interpolation (``align_corners=False``) then a 1x1 convolution.

    Bilinear rather than transposed convolution avoids checkerboard artefacts.

    Parameters
    ----------
    cin, cout : int
        Input and output channels.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        # The aten op, not F.interpolate: scripting F.interpolate compiles every mode,
        # including ops (lanczos) that torch 2.0 - deepImageJ's libtorch - cannot load.
        # A scale factor rather than an output size: ONNX then gets a Resize by scales,
        # which works for every input size (a size is traced as a constant).
        x = torch.ops.aten.upsample_bilinear2d(x, None, False, [2.0, 2.0])
        return self.conv(x)
