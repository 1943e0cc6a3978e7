"""Settings of the Noise2Void family and the defaults of each variant."""

from __future__ import annotations

from typing import Annotated, Any, Optional, Union

from pydantic import BeforeValidator, Field

from pydantic import model_validator

from bmz_cosdd.config import (BoolList, NonNegative, NonNegativeFloat, Odd, OddList, Positive, PositiveFloat,
                              check_levels, from_dict, one_of, settings)
from bmz_cosdd.methods.n2v.masker import REPLACEMENTS


def _none_if_blank(value: Any) -> Any:
    """``--struct-mask none`` (or an empty value) means no structured mask."""
    return None if isinstance(value, str) and value.strip().lower() in ("", "none") else value


@settings
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
    z_pool, z_kernel
        Volumes (``spatial_dims`` 3): per U-Net level (finest first) whether its pooling
        includes z (``depth`` entries), and the z extent of its convolutions (``depth + 1``
        entries, the bottleneck last; 1 or 3). None (the default) chooses them when the run
        starts from the voxel size and the stack depth (:mod:`bmz_cosdd.methods.anisotropy`);
        the run's config.yaml records the choice. Unused for 2-D images.
    """

    depth: Positive = 2
    features: Positive = 32
    kernel_size: Odd = 3
    batch_norm: bool = True
    blur_pool: bool = False
    top_skip: bool = True
    masked_fraction: Annotated[float, Field(gt=0, le=0.5)] = 0.02
    window: Annotated[Odd, Field(ge=3)] = 5
    replacement: Annotated[str, one_of(*REPLACEMENTS)] = "neighbour"
    struct_mask: Annotated[Union[str, list[list[int]], None], BeforeValidator(_none_if_blank)] = None
    psf_sigma: Optional[PositiveFloat] = None
    psf_file: Optional[str] = None
    psf_size: NonNegative = 0
    positivity: NonNegativeFloat = 1.0
    background: float = 0.0
    z_pool: Optional[BoolList] = None
    z_kernel: Optional[OddList] = None

    @model_validator(mode="after")
    def _z_levels(self) -> "N2VConfig":
        check_levels(self.z_pool, self.depth, "z_pool (--z-pool)")
        check_levels(self.z_kernel, self.depth + 1, "z_kernel (--z-kernel, the bottleneck last)")
        return self

    @property
    def has_psf(self) -> bool:
        return self.psf_file is not None or self.psf_sigma is not None


def n2v_config(values: dict[str, Any], defaults: dict[str, Any]) -> N2VConfig:
    """Resolve ``values`` over a variant's ``defaults`` into a checked :class:`N2VConfig`.

    Raises
    ------
    bmz_cosdd.errors.UserError
        One line naming the field (see :func:`bmz_cosdd.config.from_dict`).
    """
    resolved = {**defaults, **{k: v for k, v in values.items() if v is not None}}
    if "struct_mask" in values and values["struct_mask"] is None:
        resolved["struct_mask"] = None
    return from_dict(N2VConfig, resolved, "model.")
