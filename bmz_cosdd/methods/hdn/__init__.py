"""Hierarchical DivNoising (Prakash et al., ICLR 2022): the ladder VAE scored by a pixel noise model.

HDN_3-6 (``--deactivate-levels 1,2``) takes no bottom-up information at the finest
levels, which then cannot reproduce pixel-scale structured noise.
"""

from bmz_cosdd.methods.hdn.method import HDN, HDNConfig
from bmz_cosdd.methods.registry import register

register(HDN)

__all__ = ["HDN", "HDNConfig"]
