"""Decoders from latent features to images."""

from typing import Final, List

from torch import Tensor, nn

from bmz_cosdd.nn.blocks import check_spatial_dims, conv_class
from bmz_cosdd.nn.fast_inference import channels_last


class SignalDecoder(nn.Module):
    """Latent features to the clean signal: ``layers`` 3x3 convolutions, ReLU between them.

    Maps (B, features, [Z,] Y, X) to (B, out_channels, [Z,] Y, X).

    Parameters
    ----------
    features
        Channels of the latent features.
    out_channels
        Channels of the image.
    layers
        Number of 3x3 (3x3x3 in 3-D) convolutions (at least 1).
    hidden
        Width of the hidden convolutions.
    spatial_dims
        2 (images (B, C, Y, X), the default) or 3 (volumes (B, C, Z, Y, X)).
    """

    spatial_dims: Final[int]

    def __init__(
        self, features: int, out_channels: int, layers: int = 4, hidden: int = 128, spatial_dims: int = 2
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        conv = conv_class(spatial_dims)
        modules: List[nn.Module] = []
        width = features
        for _ in range(layers - 1):
            # In place: a convolution's backward does not need its output, and a pass is saved.
            modules += [conv(width, hidden, 3, padding=1), nn.ReLU(inplace=True)]
            width = hidden
        modules.append(conv(width, out_channels, 3, padding=1))
        self.net = nn.Sequential(*modules)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)

    def infer(self, z: Tensor) -> Tensor:
        """``forward`` on channels-last memory, where the CPU's convolutions are fastest
        (:mod:`bmz_cosdd.nn.fast_inference`); the output (B, out_channels, [Z,] Y, X) is channels-last too."""
        return self.net(channels_last(z))
