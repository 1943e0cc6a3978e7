"""N2V, N2V2, StructN2V and PSF-N2V: the defaults that make each method what it is.

Hyperparameters follow the papers' reference settings where they suit short runs;
where we differ, the README says so. Every value can be overridden by a CLI option
or the config file.
"""

from __future__ import annotations

from bmz_cosdd.methods.n2v.method import BlindSpotMethod

N2V_CITE = ("A. Krull, T.-O. Buchholz and F. Jug, Noise2Void - Learning Denoising from Single Noisy Images, "
            "CVPR 2019", "10.48550/arXiv.1811.10980")

N2V = BlindSpotMethod(
    name="n2v",
    title="Noise2Void",
    summary="Noise2Void: self-supervised blind-spot U-Net for pixel-independent noise",
    defaults=dict(depth=2, features=32, masked_fraction=0.02, window=5, replacement="neighbour"),
    train_defaults=dict(lr=4e-4),
    cite=[N2V_CITE],
    tags=["n2v", "noise2void"],
)

N2V2 = BlindSpotMethod(
    name="n2v2",
    title="N2V2",
    summary="N2V2: Noise2Void with max-blur-pool, no top skip and median replacement (no checkerboard artefacts)",
    defaults=dict(depth=2, features=32, masked_fraction=0.02, window=5, replacement="median",
                  blur_pool=True, top_skip=False),
    train_defaults=dict(lr=4e-4),
    cite=[("E. Hoeck, T.-O. Buchholz, A. Brachmann, F. Jug and A. Freytag, N2V2 - Fixing Noise2Void Checkerboard "
           "Artifacts with Modified Sampling Strategies and a Tweaked Network Architecture, ECCV 2022 Workshops",
           "10.48550/arXiv.2211.08512"), N2V_CITE],
    tags=["n2v2", "noise2void"],
)

STRUCT_N2V = BlindSpotMethod(
    name="structn2v",
    title="Structured N2V",
    summary="Structured Noise2Void: blind mask along the noise correlation (auto-estimated) for structured noise",
    defaults=dict(depth=2, features=32, masked_fraction=0.02, window=5, replacement="neighbour",
                  struct_mask="auto"),
    train_defaults=dict(lr=4e-4),
    cite=[("C. Broaddus, A. Krull, M. Weigert, U. Schmidt and G. Myers, Removing Structured Noise with "
           "Self-Supervised Blind-Spot Networks, ISBI 2020", "10.1109/ISBI45749.2020.9098336"), N2V_CITE],
    extra_options=("struct_mask",),
    tags=["structn2v", "noise2void", "structured-noise"],
)

PSF_N2V = BlindSpotMethod(
    name="psf-n2v",
    title="PSF-N2V",
    summary="PSF-N2V: Noise2Void whose output is convolved with the PSF (no high-frequency artefacts; deconvolves)",
    defaults=dict(depth=3, features=64, masked_fraction=0.03, window=5, replacement="neighbour",
                  psf_sigma=1.0, positivity=1.0, background=0.0),
    train_defaults=dict(lr=1e-3),
    cite=[("A. S. Goncharova, A. Honigmann, F. Jug and A. Krull, Improving Blind Spot Denoising for Microscopy, "
           "ECCV 2020 Workshops", "10.48550/arXiv.2008.08414"), N2V_CITE],
    extra_options=("psf_sigma", "psf_file", "positivity", "background"),
    estimators=("denoised", "deconvolved"),
    tags=["psf-n2v", "noise2void", "deconvolution"],
)

VARIANTS = (N2V, N2V2, STRUCT_N2V, PSF_N2V)
