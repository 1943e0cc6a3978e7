"""Settings of the Noise2Void family and the defaults of each variant."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bmz_cosdd.config import from_dict
from bmz_cosdd.errors import UserError

from bmz_cosdd.methods.n2v.masker import REPLACEMENTS


@dataclass
class N2VConfig:
    """A blind-spot denoiser: one U-Net, one masker, an optional PSF.

    Parameters
    ----------
    depth, features, kernel_size, batch_norm
        U-Net: poolings, channels of the first level (doubled per level), odd kernel
        size, batch normalisation.
    blur_pool, top_skip
        N2V2's changes: max-blur-pool instead of max-pool, and no skip connection at
        full resolution (``top_skip=False``).
    masked_fraction
        Fraction of the pixels of a crop that are masked (stratified), in (0, 0.5].
    window
        Odd side of the window from which a masked pixel's replacement is drawn.
    replacement
        ``neighbour`` (N2V: a uniformly chosen neighbour) or ``median`` (N2V2: the
        window's median without the centre).
    struct_mask
        StructN2V blind mask: ``None`` (plain blind spot), ``"x:9"``/``"y:17"`` (axis
        and odd span), a small 0/1 2-D array (list of rows) or a file holding one, or
        ``"auto"``: estimated from the data when training starts (the run's
        ``config.yaml`` records the choice).
    psf_sigma, psf_file
        PSF-N2V: the network output is convolved with this PSF (a Gaussian of
        ``psf_sigma`` pixels, or the 2-D PSF in ``psf_file``, which wins) before the
        loss. Both ``None``: no PSF.
    psf_size
        Side of the PSF kernel, resolved when training starts (0: no PSF).
    positivity, background
        PSF-N2V: weight of the penalty on the deconvolved output falling below
        ``background`` (raw intensities; the camera offset).
    """

    depth: int = 2
    features: int = 32
    kernel_size: int = 3
    batch_norm: bool = True
    blur_pool: bool = False
    top_skip: bool = True
    masked_fraction: float = 0.02
    window: int = 5
    replacement: str = "neighbour"
    struct_mask: str | list[list[int]] | None = None
    psf_sigma: float | None = None
    psf_file: str | None = None
    psf_size: int = 0
    positivity: float = 1.0
    background: float = 0.0

    @property
    def has_psf(self) -> bool:
        return self.psf_file is not None or self.psf_sigma is not None


def n2v_config(values: dict[str, Any], defaults: dict[str, Any]) -> N2VConfig:
    """Resolve ``values`` over a variant's ``defaults`` and check them (one-line errors)."""
    resolved = {**defaults, **{k: v for k, v in values.items() if v is not None}}
    if "struct_mask" in values and values["struct_mask"] is None:
        resolved["struct_mask"] = None
    cfg = from_dict(N2VConfig, resolved, "model.")
    for name in ("depth", "features"):
        if getattr(cfg, name) < 1:
            raise UserError(f"model.{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.kernel_size < 1 or cfg.kernel_size % 2 == 0:
        raise UserError(f"model.kernel_size must be odd and positive, got {cfg.kernel_size}")
    if not (0.0 < cfg.masked_fraction <= 0.5) or not math.isfinite(cfg.masked_fraction):
        raise UserError(f"the masked fraction must be in (0, 0.5], got {cfg.masked_fraction}")
    if cfg.window < 3 or cfg.window % 2 == 0:
        raise UserError(f"the replacement window must be odd and at least 3, got {cfg.window}")
    if cfg.replacement not in REPLACEMENTS:
        raise UserError(f"unknown replacement {cfg.replacement!r} (choose {' or '.join(REPLACEMENTS)})")
    if cfg.psf_sigma is not None and not (cfg.psf_sigma > 0 and math.isfinite(cfg.psf_sigma)):
        raise UserError(f"the PSF sigma must be a positive number of pixels, got {cfg.psf_sigma}")
    if cfg.positivity < 0 or not math.isfinite(cfg.positivity):
        raise UserError(f"the positivity weight must be >= 0, got {cfg.positivity}")
    if not math.isfinite(cfg.background):
        raise UserError(f"the background must be a finite intensity, got {cfg.background}")
    if isinstance(cfg.struct_mask, str) and cfg.struct_mask.strip().lower() in ("", "none"):
        cfg.struct_mask = None
    return cfg
