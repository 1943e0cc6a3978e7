"""Decoders from latent features to images."""

from typing import List

from torch import Tensor, nn


class SignalDecoder(nn.Module):
    """Latent features to the clean signal: ``layers`` 3x3 convolutions, ReLU between them.

    Parameters
    ----------
    features
        Channels of the latent features.
    out_channels
        Channels of the image.
    layers
        Number of 3x3 convolutions (at least 1).
    hidden
        Width of the hidden convolutions.
    """

    def __init__(self, features: int, out_channels: int, layers: int = 4, hidden: int = 128) -> None:
        super().__init__()
        modules: List[nn.Module] = []
        width = features
        for _ in range(layers - 1):
            modules += [nn.Conv2d(width, hidden, 3, padding=1), nn.ReLU()]
            width = hidden
        modules.append(nn.Conv2d(width, out_channels, 3, padding=1))
        self.net = nn.Sequential(*modules)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)
