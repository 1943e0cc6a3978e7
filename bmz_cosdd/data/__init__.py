"""Data layer: reading and writing images, axes, normalisation, splits, crops and synthetic data.

Modules
-------
axes
    Axes strings (``"SYX"``, ``"ZCYX"``, ...) and the ``(N, C, Y, X)`` / ``(N, C, Z, Y, X)`` views used inside.
io
    Finding, reading (TIFF, NPY, PNG) and atomically writing files; :class:`~bmz_cosdd.data.io.Image`.
physical_sizes
    Axes and pixel sizes a TIFF records, and the check that the axes named Y and X are the image plane.
normalisation
    Per-channel statistics computed and applied in float64.
splits
    Deterministic train/validation splits without leakage.
crops
    Resumable random training crops and fixed validation crops.
synthetic
    Seeded synthetic microscopy images and noise recipes.
"""
