"""Denoised images against clean or averaged ground truth: PSNR and SSIM per image, a table, JSON and a panel.

Files are paired by name (see :func:`pair_files`); every 2-D sample of a stack
(``S``, ``T`` or ``Z`` axis) is one image, labelled ``file.tif[i]``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bmz_cosdd.data.axes import parse_axes, to_samples_cyx
from bmz_cosdd.data.io import find_files, read_array
from bmz_cosdd.data.method_noise import ResidualCheck, check_residual
from bmz_cosdd.errors import UserError
from bmz_cosdd.analysis.metrics import SSIM_MIN_SIDE, SSIM_SIGMA, psnr, ssim

# Outputs of ``predict`` that are not estimates of the clean image (spreads, samples, figures); skipped in folders.
NOT_ESTIMATES = ("_std", "_samples", "_sampling")
PER_IMAGE_RULE = "per image: target max - min"
RESIDUAL_IMAGES = 32  # images handed to the residual check (it examines up to 32)
SSIM_SETTINGS = (
    f"Wang et al. 2004 via skimage.metrics.structural_similarity: Gaussian window sigma {SSIM_SIGMA} "
    "(11 taps), K1 0.01, K2 0.03, population covariances; mean over channels"
)
PANEL_CELL_INCHES = (3.4, 3.1)
PANEL_DPI = 90


@dataclass
class ImageScore:
    """The scores of one 2-D image (one sample of a file).

    Attributes
    ----------
    image, target : str
        Labels of the prediction and the target, e.g. ``"a_mmse.tif[3]"``.
    psnr : float
        PSNR in dB, ``10 log10(data_range**2 / mse)`` (``inf`` if identical).
    ssim : float
        SSIM (see ``SSIM_SETTINGS``).
    mse : float
        Mean squared error, in squared target units.
    data_range : float
        The peak-to-peak range used by PSNR and SSIM.
    noisy_psnr, noisy_ssim : float or None
        The same scores for the noisy input, when one was given.
    """

    image: str
    target: str
    psnr: float
    ssim: float
    mse: float
    data_range: float
    noisy_psnr: float | None = None
    noisy_ssim: float | None = None


@dataclass
class PanelView:
    """Centre crops of one image, channel 0, kept for :meth:`EvaluationResult.write_panel`."""

    score: ImageScore
    prediction: np.ndarray
    target: np.ndarray
    noisy: np.ndarray | None
    origin: tuple[int, int]
    n_channels: int


def _number(value: float | None) -> float | str | None:
    """JSON has no infinity: infinite values become the string ``"inf"`` (``float("inf")`` reads it back)."""
    if value is not None and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _mean(values: list[float | None]) -> float | None:
    return None if not values or any(v is None for v in values) else float(np.mean(values))


@dataclass
class EvaluationResult:
    """Per-image scores, their means, and crops for the panel.

    Attributes
    ----------
    rows : list of ImageScore
        One per 2-D image, grouped by target file.
    data_range_rule : str
        How the data range was chosen: ``"per image: target max - min"`` or ``"fixed: <value>"``.
    views : list of PanelView
        Crops of the first images, for :meth:`write_panel`.
    residual : ResidualCheck or None
        With the noisy inputs: whether ``noisy - prediction`` looks like the noise
        (:func:`~bmz_cosdd.data.method_noise.check_residual`; no ground truth involved).
    """

    rows: list[ImageScore]
    data_range_rule: str
    views: list[PanelView] = field(default_factory=list, repr=False)
    residual: ResidualCheck | None = None

    @property
    def has_noisy(self) -> bool:
        return bool(self.rows) and self.rows[0].noisy_psnr is not None

    def means(self) -> dict[str, float | None]:
        """Arithmetic means over images of PSNR (dB), SSIM, MSE and the noisy scores (None without noisy)."""
        return {
            name: _mean([getattr(r, name) for r in self.rows])
            for name in ("psnr", "ssim", "mse", "noisy_psnr", "noisy_ssim")
        }

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: settings, one entry per image and the means (infinite PSNR as ``"inf"``)."""
        means = self.means()
        return {
            "metrics": {
                "psnr_db": "10 log10(data_range^2 / MSE), in dB",
                "ssim": SSIM_SETTINGS,
                "mean": "arithmetic mean of the per-image values",
            },
            "data_range_rule": self.data_range_rule,
            "images": [
                {
                    "image": r.image, "target": r.target, "psnr_db": _number(r.psnr), "ssim": r.ssim,
                    "mse": r.mse, "data_range": r.data_range,
                    **({"noisy_psnr_db": _number(r.noisy_psnr), "noisy_ssim": r.noisy_ssim} if self.has_noisy else {}),
                }
                for r in self.rows
            ],
            "mean": {
                "n_images": len(self.rows), "psnr_db": _number(means["psnr"]), "ssim": means["ssim"],
                "mse": means["mse"],
                **({"noisy_psnr_db": _number(means["noisy_psnr"]), "noisy_ssim": means["noisy_ssim"]}
                   if self.has_noisy else {}),
            },
            **({"residual_check": self.residual.to_dict()} if self.residual is not None else {}),
        }

    def format_table(self) -> str:
        """Fixed-width text table: one line per image and a mean line, under a header stating the data range."""
        heads = ["image", "PSNR dB", "SSIM", "data range"] + (["noisy PSNR dB", "noisy SSIM"] if self.has_noisy else [])

        def cells(
            label: str, p: float | None, s: float | None, d: str, noisy_p: float | None, noisy_s: float | None
        ) -> list[str]:
            row = [label, f"{p:.2f}", f"{s:.4f}", d]
            return row + ([f"{noisy_p:.2f}", f"{noisy_s:.4f}"] if self.has_noisy else [])

        means = self.means()
        lines = [cells(r.image, r.psnr, r.ssim, f"{r.data_range:.5g}", r.noisy_psnr, r.noisy_ssim) for r in self.rows]
        lines.append(cells(f"mean of {len(self.rows)}", means["psnr"], means["ssim"], "", means["noisy_psnr"],
                           means["noisy_ssim"]))
        widths = [max(len(row[i]) for row in [heads, *lines]) for i in range(len(heads))]

        def join(row: list[str]) -> str:
            return "  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]).rstrip()

        rule = "-" * len(join(heads))
        footer = [] if self.residual is None else [self.residual.describe()]
        return "\n".join([f"data range: {self.data_range_rule}; SSIM: Wang et al. 2004 (Gaussian sigma {SSIM_SIGMA})",
                          join(heads), rule, *map(join, lines[:-1]), rule, join(lines[-1]), *footer])

    def write_panel(self, path: str | Path) -> Path:
        """Write a PNG: per image (up to the number kept), crops of noisy / prediction / target / |error|.

        Noisy, prediction and target share display limits (the target crop's 0.5-99.5
        percentiles); the absolute error has its own colour bar from 0. Multi-channel
        images show channel 0 only (the figure title says so); scores in the titles are
        over all channels.

        Parameters
        ----------
        path
            The PNG to write (atomically).

        Returns
        -------
        pathlib.Path
            ``path``.
        """
        from bmz_cosdd.plotting import display_range, pyplot, save_figure, show_image

        if not self.views:
            raise UserError("no images to show in the panel")
        plt = pyplot()
        n_cols = 4 if self.has_noisy else 3
        width, height = PANEL_CELL_INCHES
        fig, axes = plt.subplots(len(self.views), n_cols, figsize=(width * n_cols, height * len(self.views)),
                                 squeeze=False)
        for ax_row, view in zip(axes, self.views):
            score = view.score
            limits = display_range(view.target)
            panels = [] if view.noisy is None else [
                (view.noisy, f"noisy\n{score.noisy_psnr:.2f} dB, SSIM {score.noisy_ssim:.3f}")]
            panels += [(view.prediction, f"prediction\n{score.psnr:.2f} dB, SSIM {score.ssim:.3f}"),
                       (view.target, "target")]
            for ax, (image, title) in zip(ax_row, panels):
                show_image(ax, image, title, "intensity (target units)", limits)
            error = np.abs(view.prediction - view.target)
            show_image(ax_row[-1], error, "|prediction - target|", "|error| (target units)",
                       (0.0, max(display_range(error, 0.0, 99.5)[1], 1e-12)), cmap="magma")
            (y0, x0), (h, w) = view.origin, view.target.shape
            ax_row[0].set_ylabel(f"{score.image}\ny {y0}-{y0 + h}, x {x0}-{x0 + w} (px)", fontsize=8)
        channels = max(v.n_channels for v in self.views)
        note = f"; channel 0 of {channels} shown" if channels > 1 else ""
        fig.suptitle(f"Centre crops; PSNR and SSIM of the whole image, data range {self.data_range_rule}{note}",
                     fontsize=9)
        save_figure(fig, Path(path), dpi=PANEL_DPI)
        return Path(path)


def match_target(file: Path, targets: list[Path]) -> Path | None:
    """The target of the same name, else of the same stem, else the longest stem that ``file``'s stem
    extends with ``_``."""
    for same in (lambda t: t.name == file.name, lambda t: t.stem == file.stem):
        found = [t for t in targets if same(t)]
        if found:
            return found[0]
    prefixed = [t for t in targets if file.stem.startswith(t.stem + "_")]
    return max(prefixed, key=lambda t: len(t.stem)) if prefixed else None


def pair_files(
    prediction: str | Path, target: str | Path, pattern: str = "*", noisy: str | Path | None = None
) -> list[tuple[Path, Path, Path | None]]:
    """Pair prediction files (and noisy files) with target files.

    One prediction and one target (e.g. a folder holding a single ``*_mmse.tif`` and a ground-truth
    file) are paired directly, whatever their names. Otherwise each file is paired with the
    target of the same name, else of the same stem, else the target whose stem
    followed by ``_`` starts the file's stem (``a_mmse.tif`` and ``a_direct.tif``
    both pair with ``a.tif``). ``*_std``, ``*_samples`` and ``*_sampling`` files in a prediction
    folder are skipped (they are not estimates of the clean image).

    Parameters
    ----------
    prediction, target
        Files or folders.
    pattern
        Glob pattern inside the prediction folder (targets and noisy: every image file).
    noisy
        Optional noisy inputs, file or folder, paired with the targets the same way.

    Returns
    -------
    list of (prediction, target, noisy or None)
        Grouped by target, in file name order.

    Raises
    ------
    UserError
        If a prediction has no target, or a noisy input is missing or ambiguous for a target.
    """
    predictions = find_files(prediction, pattern)
    targets = find_files(target, "*")
    if Path(prediction).is_dir():
        predictions = [p for p in predictions if not p.stem.endswith(NOT_ESTIMATES)]
        if not predictions:
            raise UserError(f"{prediction}: only {'/'.join(NOT_ESTIMATES)} files match '{pattern}', no predictions")
    direct = len(predictions) == 1 and len(targets) == 1
    pairs = []
    for pred in predictions:
        match = targets[0] if direct else match_target(pred, targets)
        if match is None:
            raise UserError(
                f"{pred.name}: no target of the same name or stem, nor one whose stem + '_' starts it, in {target}"
            )
        pairs.append((pred, match))
    pairs.sort(key=lambda p: (str(p[1]), str(p[0])))
    noisy_of: dict[Path, Path] = {}
    if noisy is not None:
        noisy_files = find_files(noisy, "*")
        for tgt in dict.fromkeys(t for _, t in pairs):
            if len(noisy_files) == 1 and len(targets) == 1:
                found = noisy_files
            else:
                found = [n for n in noisy_files if match_target(n, targets) == tgt]
            if len(found) != 1:
                what = "no" if not found else f"{len(found)} ({', '.join(n.name for n in found)})"
                raise UserError(f"{tgt.name}: {what} noisy files pair with this target in {noisy}")
            noisy_of[tgt] = found[0]
    return [(p, t, noisy_of.get(t)) for p, t in pairs]


def read_images(path: Path, axes: str) -> np.ndarray:
    """The 2-D images of an image file as float64 ``(N, C, Y, X)``; one-line errors for bad pixels or axes."""
    array = read_array(path)
    if array.dtype.kind not in "biuf":
        raise UserError(f"{path.name}: unsupported pixel type {array.dtype}; expected integer or float pixels")
    samples = to_samples_cyx(array, parse_axes(axes, array.ndim, path.name, shape=array.shape)).astype(np.float64)
    bad = int((~np.isfinite(samples)).sum())
    if bad:
        raise UserError(f"{path.name}: {bad} NaN or Inf pixels")
    return samples


def _check_shapes(a: Path, a_samples: np.ndarray, b: Path, b_samples: np.ndarray) -> None:
    if a_samples.shape != b_samples.shape:
        raise UserError(
            f"{a.name} and {b.name} differ in shape: {a_samples.shape} vs {b_samples.shape} (as N, C, Y, X)"
        )


def _centre(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    y0, x0 = max(0, (image.shape[-2] - size) // 2), max(0, (image.shape[-1] - size) // 2)
    return image[..., y0:y0 + size, x0:x0 + size], (y0, x0)


def evaluate(
    prediction: str | Path,
    target: str | Path,
    *,
    axes: str = "YX",
    pattern: str = "*",
    noisy: str | Path | None = None,
    data_range: float | None = None,
    crop: int = 256,
    panel_images: int = 4,
) -> EvaluationResult:
    """Score denoised images against clean or averaged ground truth.

    Parameters
    ----------
    prediction, target
        Files or folders, paired by :func:`pair_files`.
    axes
        Axes of every array, e.g. ``"YX"``, ``"SYX"``, ``"CYX"``, ``"TYX"``.
    pattern
        Glob pattern inside the prediction folder, e.g. ``"*_mmse.tif"``.
    noisy
        Optional noisy inputs (file or folder), scored against the same targets; their residual
        against the prediction is checked too (:attr:`EvaluationResult.residual`).
    data_range
        Peak-to-peak range for PSNR and SSIM; default: each target image's max - min.
    crop
        Side in pixels of the centre crops kept for :meth:`EvaluationResult.write_panel`.
    panel_images
        How many images keep crops for the panel.

    Returns
    -------
    EvaluationResult
        One row per 2-D image, grouped by target file.

    Raises
    ------
    UserError
        For unpaired files, different shapes, NaN or Inf pixels, a constant target
        without ``data_range``, or images smaller than SSIM's 11 x 11 window.
    """
    if data_range is not None and not data_range > 0:
        raise UserError(f"the data range must be positive, got {data_range}")
    if crop < 1:
        raise UserError(f"the crop size must be at least 1 pixel, got {crop}")
    rows: list[ImageScore] = []
    views: list[PanelView] = []
    residual_pairs: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    pairs = pair_files(prediction, target, pattern, noisy)
    for (tgt, noisy_path), group in itertools.groupby(pairs, key=lambda p: (p[1], p[2])):
        truth = read_images(tgt, axes)
        noisy_samples = None if noisy_path is None else read_images(noisy_path, axes)
        if noisy_path is not None:
            _check_shapes(noisy_path, noisy_samples, tgt, truth)
        for pred, _, _ in group:
            estimate = read_images(pred, axes)
            _check_shapes(pred, estimate, tgt, truth)
            many = len(truth) > 1
            for i, (est, ref) in enumerate(zip(estimate, truth)):
                label, ref_label = (f"{pred.name}[{i}]", f"{tgt.name}[{i}]") if many else (pred.name, tgt.name)
                rng = data_range if data_range is not None else float(ref.max() - ref.min())
                if not rng > 0:
                    raise UserError(f"{ref_label}: the target is constant; give a data range (--data-range)")
                if min(ref.shape[-2:]) < SSIM_MIN_SIDE:
                    raise UserError(f"{ref_label}: SSIM needs images of at least {SSIM_MIN_SIDE} x {SSIM_MIN_SIDE}"
                                    f" pixels, got {ref.shape[-2]} x {ref.shape[-1]}")
                noise = None if noisy_samples is None else noisy_samples[i]
                if noise is not None and len(residual_pairs[0]) < RESIDUAL_IMAGES:
                    residual_pairs[0].append(noise)
                    residual_pairs[1].append(est)
                score = ImageScore(
                    label, ref_label, psnr(est, ref, rng), ssim(est, ref, rng), float(np.mean((est - ref) ** 2)),
                    rng, None if noise is None else psnr(noise, ref, rng),
                    None if noise is None else ssim(noise, ref, rng),
                )
                rows.append(score)
                if len(views) < panel_images:
                    (p_crop, origin), (t_crop, _) = _centre(est[0], crop), _centre(ref[0], crop)
                    n_crop = None if noise is None else _centre(noise[0], crop)[0]
                    views.append(PanelView(score, p_crop.copy(), t_crop.copy(),
                                           None if n_crop is None else n_crop.copy(), origin, est.shape[0]))
    rule = PER_IMAGE_RULE if data_range is None else f"fixed: {data_range:g}"
    residual = check_residual(*residual_pairs) if residual_pairs[0] else None
    return EvaluationResult(rows, rule, views, residual)
