"""The Noise2Void family: N2V, N2V2, StructN2V and PSF-N2V, sharing one U-Net and one blind-spot masker."""

from bmz_cosdd.methods.n2v.method import BlindSpotMethod
from bmz_cosdd.methods.n2v.variants import N2V, N2V2, PSF_N2V, STRUCT_N2V, VARIANTS
from bmz_cosdd.methods.registry import register

for _variant in VARIANTS:
    register(_variant)

__all__ = ["BlindSpotMethod", "N2V", "N2V2", "PSF_N2V", "STRUCT_N2V", "VARIANTS"]
