"""DivNoising (Prakash et al., ICLR 2021): a one-level convolutional VAE scored by a pixel noise model."""

from bmz_cosdd.methods.divnoising.method import DIVNOISING, DivNoisingConfig
from bmz_cosdd.methods.registry import register

register(DIVNOISING)

__all__ = ["DIVNOISING", "DivNoisingConfig"]
