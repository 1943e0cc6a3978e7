"""COSDD settings and the presets of the paper's appendix."""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Any, Optional

from pydantic import model_validator

from bmz_cosdd.config import (BoolList, Fraction, NonNegative, OddList, Positive, PositiveFloat, PositiveList,
                              TrainConfig, check_levels, from_dict, latent_widths, one_of, settings)
from bmz_cosdd.errors import UserError
from bmz_cosdd.methods.base import Budget
from bmz_cosdd.methods.cosdd.preset_choice import choose_preset

# COSDD's default length (6000 steps of the default 100 per epoch): the method's training default,
# and the budget ``--preset auto`` chooses for when a caller gives none.
DEFAULT_EPOCHS = 60

DIRECTIONS = ("x", "y", "z", "none")
DIRECT_LOSSES = ("mse", "l1")


@settings
class COSDDConfig:
    """Architecture of a COSDD model.

    Parameters
    ----------
    preset
        Name of the preset the other values started from (``tiny``, ``small``, ``large``, ``reference``).
        ``auto`` (the default of :func:`cosdd_config`) is resolved when the config is built, from
        the device and the training budget (:func:`~bmz_cosdd.methods.cosdd.preset_choice.choose_preset`).
    preset_auto, preset_reason
        True when ``preset`` was chosen by ``auto``, and why (with the expected PSNR of each preset
        in the run's budget; :mod:`bmz_cosdd.methods.cosdd.preset_choice`).
    direction
        Axis along which the noise is correlated: ``x`` (rows), ``y`` (columns),
        ``z`` (along Z, 3-D data only), ``none`` (pixel-independent: the noise decoder sees no other pixel) or
        ``auto`` (measured from the training images when the run starts; the
        run's config.yaml records the result).
    n_levels, latent_channels, features, blocks_per_level
        Ladder VAE: hierarchy levels, latent channels per level (finest first), feature
        width and gated residual blocks per level. One latent width stands for every level.
    ar_layers, ar_kernel, ar_hidden
        1-D autoregressive noise decoder: layers, kernel length and width; the receptive
        field grows with layers and kernel (1 layer of 5 sees 5 px, 2 see 13, 6 see 37, 8 see
        49). ``ar_layers`` None (the default) sizes the field from the noise's correlation
        length measured on the training images when the run starts (see :func:`ar_field_for`).
    context_dropout
        Fraction of the training crops whose noise decoder sees none of the earlier pixels
        of its row (or column): for those, only the latent can explain the image, so the
        latent must carry the signal. Without it, the decoder predicts smooth signal from
        the row's earlier pixels and the latent goes unused (posterior collapse; the remedy
        is "word dropout", Bowman et al., CoNLL 2016). 0 switches it off; None (the default)
        chooses it from the measured noise correlation (see :func:`context_dropout_for`).
    n_gaussians, min_scale
        Mixture components per pixel and the floor on their scale (normalised units).
    signal_layers, signal_hidden
        Signal decoder: 3x3 convolutions and their width.
    direct_denoiser, direct_loss, direct_depth, direct_features
        Optional deterministic U-Net that regresses the decoded signal (``mse`` gives the
        mean, ``l1`` the median) for one-pass prediction.
    halo
        Context in pixels added around each tile at prediction.
    z_pool, z_kernel, z_halo
        Volumes (``spatial_dims`` 3): per ladder level (finest first) whether its
        down-sampling includes z and the z extent of its convolutions (1 or 3), and the
        context in planes added above and below each tile (at most ``halo``). None (the
        default) chooses them when the run starts from the voxel size and the stack depth
        (:mod:`bmz_cosdd.methods.anisotropy`): the halo is capped so that a package takes
        the thinnest training stack. Unused for 2-D images.
    direct_z_pool, direct_z_kernel
        The same for the direct denoiser's U-Net (``direct_depth`` and ``direct_depth + 1``
        entries); its z halo is its exact receptive field, fitted to the stack.
    """

    preset: str = "small"
    preset_auto: bool = False
    preset_reason: Optional[str] = None
    direction: Annotated[str, one_of(*DIRECTIONS, "auto")] = "auto"
    n_levels: Positive = 6
    latent_channels: PositiveList = field(default_factory=lambda: [32] * 5 + [64])
    features: Positive = 32
    blocks_per_level: Positive = 1
    ar_layers: Optional[Positive] = None
    ar_kernel: Positive = 5
    ar_hidden: Positive = 32
    n_gaussians: Positive = 3
    min_scale: PositiveFloat = 1e-3
    context_dropout: Optional[Fraction] = None
    signal_layers: Positive = 4
    signal_hidden: Positive = 64
    direct_denoiser: bool = False
    direct_loss: Annotated[str, one_of(*DIRECT_LOSSES)] = "mse"
    direct_depth: Positive = 3
    direct_features: Positive = 32
    halo: NonNegative = 32
    z_pool: Optional[BoolList] = None
    z_kernel: Optional[OddList] = None
    z_halo: Optional[NonNegative] = None
    direct_z_pool: Optional[BoolList] = None
    direct_z_kernel: Optional[OddList] = None

    @model_validator(mode="after")
    def _one_width_per_level(self) -> "COSDDConfig":
        widths = latent_widths(self.latent_channels, self.n_levels)
        if widths != self.latent_channels:
            self.latent_channels = widths
        check_levels(self.z_pool, self.n_levels, "z_pool")
        check_levels(self.z_kernel, self.n_levels, "z_kernel")
        check_levels(self.direct_z_pool, self.direct_depth, "direct_z_pool")
        check_levels(self.direct_z_kernel, self.direct_depth + 1, "direct_z_kernel (the bottleneck last)")
        return self


PRESETS: dict[str, dict[str, Any]] = {
    # Paper appendix, "large": 14 levels, 13 x 64 latent channels and 128 at the top.
    "large": dict(
        n_levels=14, latent_channels=[64] * 13 + [128], features=64, ar_hidden=64,
        signal_hidden=128, direct_features=40, direct_depth=3,
    ),
    # Paper appendix, "small": 6 levels and half the dimensions.
    "small": dict(
        n_levels=6, latent_channels=[32] * 5 + [64], features=32, ar_hidden=32,
        signal_hidden=64, direct_features=32, direct_depth=3,
    ),
    # The reference implementation's default (krulllab/COSDD): width 64, 8 levels of 32 latent channels,
    # an 8-layer noise decoder of width 64 (49 px field) and a signal decoder of width 64; for comparisons
    # with it (scripts/benchmark.py prints the parameters per part against the reference's).
    "reference": dict(
        n_levels=8, latent_channels=[32] * 8, features=64, ar_hidden=64, ar_layers=8, signal_hidden=64,
        n_gaussians=3, direct_features=32, direct_depth=3,
    ),
    # For tests, the demo and quick CPU trials; not a quality setting.
    "tiny": dict(
        n_levels=4, latent_channels=[8] * 4, features=16, ar_hidden=16,
        signal_layers=3, signal_hidden=32, direct_features=8, direct_depth=2, halo=16,
    ),
}


#: The noise decoder's field covers this many correlation lengths.
FIELD_PER_LENGTH = 4
#: Field when the correlation persists beyond the lags examined, or along z (not measured): the paper's.
LONG_FIELD_LAYERS = 8


def ar_field_for(length: int, max_lag: int, kernel: int) -> int:
    """Layers of the noise decoder for noise correlated over ``length`` pixels along its direction.

    The field must reach the correlated neighbours; a few correlation lengths of context
    suffice (on real tiles with correlation lengths of 1-2 px, fields of 5 and 37 px gave
    the same PSNR within the spread of seeds; ``scripts/benchmark_real.py``), and a shorter
    field leaves the decoder less of the row's signal to model instead of the latent. So
    the field is the smallest that reaches ``FIELD_PER_LENGTH`` correlation lengths (at least
    one layer); a correlation that persists to the largest lag examined (``max_lag``) gets
    the paper's ``LONG_FIELD_LAYERS`` layers (49 px with kernel 5: the paper found 40 px or
    more necessary on its data).

    Examples
    --------
    >>> ar_field_for(1, 16, 5), ar_field_for(2, 16, 5), ar_field_for(16, 16, 5)
    (1, 2, 8)
    """
    from bmz_cosdd.nn.ar_decoder import layers_for_field

    if length >= max_lag:
        return LONG_FIELD_LAYERS
    return layers_for_field(max(1, FIELD_PER_LENGTH * length), kernel)


#: Bounds of the automatic context dropout.
CONTEXT_DROPOUT_RANGE = (0.25, 0.9)
#: From this noise correlation up, the automatic context dropout is 0.
STRONG_CORRELATION = 0.45


def context_dropout_for(correlation: float) -> float:
    """Context dropout for noise whose largest |correlation| at lags 1-3 along its direction is ``correlation``.

    0 from :data:`STRONG_CORRELATION` up; below it ``1 - correlation`` within
    :data:`CONTEXT_DROPOUT_RANGE`. Weakly correlated noise gives the decoder's context little
    to explain, so the context mostly serves as a shortcut to the row's signal and the latent
    goes unused unless the context is hidden; strongly correlated noise is what the context
    explains, and hiding it makes the latent absorb the noise (its MMSE keeps the stripes).
    Measured on real tiles (``scripts/benchmark_real.py`` recipes, ``tiny``, MMSE of 100
    samples): weak stripes (correlation 0.18, 1500 steps) 28.7 / 29.6 / 29.9 dB at 0.5 / 0.75
    / 0.9; stripe std 0.05 (0.32, 6000 steps) 31.47 dB at 0.68 and 31.12 at 0; stripe std 0.1
    (0.53, 6000 steps) 29.13 dB at 0.47 and 29.94 at 0; the same at 0.3 of the signal (0.63)
    22.36 dB / SSIM 0.379 at 0.37 and 25.07 / 0.606 at 0; the column checkerboard (0.65) 23.6 dB
    at 0.75 and 24.6 at 0 (1500 steps), 30.15 at 0.35 and 29.51 at 0 (6000 steps); the same at 0.3
    of the signal 22.92 dB / SSIM 0.340 at 0.35 and 25.17 / 0.629 at 0 (6000 steps).

    Examples
    --------
    >>> context_dropout_for(0.18), context_dropout_for(0.32), context_dropout_for(0.56), context_dropout_for(0.02)
    (0.82, 0.68, 0.0, 0.9)
    """
    if abs(float(correlation)) >= STRONG_CORRELATION:
        return 0.0
    low, high = CONTEXT_DROPOUT_RANGE
    return round(min(high, max(low, 1.0 - abs(float(correlation)))), 2)


def preset_size_steps() -> dict[str, int]:
    """Each preset's size step in Y and X (its crops and images are multiples of it), without the direct denoiser.

    >>> preset_size_steps()
    {'large': 128, 'small': 8, 'reference': 16, 'tiny': 4}
    """
    return {name: ladder_size_step(p["n_levels"]) for name, p in PRESETS.items()}


def ladder_size_step(n_levels: int) -> int:
    """The ladder VAE's size step in Y and X: 2 to the number of levels that halve the resolution.

    >>> ladder_size_step(4), ladder_size_step(14)
    (4, 128)
    """
    from bmz_cosdd.nn.ladder_vae import ladder_downsampling

    return 2 ** sum(ladder_downsampling(n_levels))


def cosdd_config(values: dict[str, Any], device: str = "cpu", budget: Budget | None = None) -> COSDDConfig:
    """Resolve ``values`` over their preset and check them.

    Parameters
    ----------
    values
        The ``model`` section of a run's config (``--preset`` and the other COSDD options).
    device, budget
        Where the run trains (``cpu`` or ``cuda``) and how long it may (None: 6000 steps at batch 4 and
        crop 64, COSDD's default length); ``preset`` ``auto`` (the default) picks the preset with the
        best measured PSNR for them (:func:`~bmz_cosdd.methods.cosdd.preset_choice.choose_preset`).

    Raises
    ------
    bmz_cosdd.errors.UserError
        For an unknown preset, direction or loss, or a value out of range, naming the field.
    """
    values = dict(values)
    preset = values.get("preset") or "auto"
    auto = preset == "auto" or bool(values.get("preset_auto"))
    reason = str(values.get("preset_reason") or "")
    if preset != "auto" and auto and reason and not reason.startswith(preset):
        # a recorded auto choice (a run's config.yaml as --config) with another --preset given over it
        auto, values["preset_reason"] = False, None
    preset_values = dict(PRESETS.get(preset, {}))
    if preset == "auto":
        budget = budget or Budget(steps=DEFAULT_EPOCHS * TrainConfig().steps_per_epoch)
        choice = choose_preset("cuda" if device == "cuda" else "cpu", budget, preset_size_steps())
        preset, values["preset_reason"] = choice.preset, choice.reason
        # reference's 8-layer noise decoder is for comparisons with the reference implementation; chosen by
        # auto, its field is sized from the data like every other preset's
        preset_values = {k: v for k, v in PRESETS[preset].items() if k != "ar_layers"}
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r} (choose auto, {', '.join(PRESETS)})")
    resolved = {**preset_values, **{k: v for k, v in values.items() if v is not None}, "preset": preset,
                "preset_auto": auto}
    if values.get("latent_channels") is None and values.get("n_levels") is not None:
        # --n-levels over a preset: the preset's widths, its top level's last (e.g. small's 5 x 32 + 64).
        n_levels = from_dict(COSDDConfig, {**resolved, "latent_channels": [1]}, "model.").n_levels
        widths = PRESETS[preset]["latent_channels"]
        resolved["latent_channels"] = [widths[0]] * (n_levels - 1) + [widths[-1]]
    return from_dict(COSDDConfig, resolved, "model.")
