"""Sampling views of the stochastic methods: a few posterior samples, their mean and spread, and
the PSNR of the mean of k samples against a target for k = 1, 10, 100 (the shape of the COSDD
paper's tables).

Every number here is in raw intensities and every PSNR is computed in float64 by
:func:`bmz_cosdd.analysis.metrics.psnr` with, unless given, the data range of the target
(``target.max() - target.min()``, per 2-D image, all channels together).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bmz_cosdd.analysis.evaluation_report import match_target, read_images
from bmz_cosdd.data.io import atomic_write_text, find_files
from bmz_cosdd.errors import UserError
from bmz_cosdd.analysis.metrics import psnr
from bmz_cosdd.inference.files import InputFile, read_inputs
from bmz_cosdd.inference.predictor import (
    SCALE_ONLY_OUTPUTS,
    ResidualPairs,
    TrainedModel,
    check_out_dir,
    predict_inputs,
)
from bmz_cosdd.methods.base import PredictOptions
from bmz_cosdd.plotting import display_range, pyplot, save_figure, show_image

DEFAULT_KS = (1, 10, 100)
CURVE_KS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
DATA_RANGE_NOTE = "target max - min of each 2-D image (all channels together)"


def mean_of_k_psnr(
    samples: np.ndarray,
    target: np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
    data_range: float | None = None,
) -> list[tuple[int, float]]:
    """PSNR of the mean of the first k samples against the target, for each k.

    Parameters
    ----------
    samples
        ``(N, ...)`` posterior samples, each the target's shape.
    target
        The ground truth.
    ks
        Numbers of samples to average; those above N are left out and N itself
        is always included.
    data_range
        Peak-to-peak range for the PSNR; default ``target.max() - target.min()``.

    Returns
    -------
    list of (int, float)
        ``(k, PSNR in dB)`` in increasing k, computed in float64.
    """
    samples = np.asarray(samples)
    target = np.asarray(target, dtype=np.float64)
    if samples.ndim < 1 or samples.shape[1:] != target.shape:
        raise ValueError(f"samples {samples.shape} must be (N, *target.shape) with target {target.shape}")
    n = samples.shape[0]
    chosen = sorted({int(k) for k in ks if 1 <= k <= n} | {n})
    total = np.zeros(target.shape, np.float64)
    rows = []
    for k in range(1, chosen[-1] + 1):
        total += samples[k - 1]
        if k in chosen:
            rows.append((k, psnr(total / k, target, data_range)))
    return rows


def _channels_first(image: np.ndarray, leading: int = 0) -> np.ndarray:
    """``(Y, X)`` -> ``(1, Y, X)`` (after ``leading`` axes such as the samples')."""
    image = np.asarray(image)
    return np.expand_dims(image, leading) if image.ndim == leading + 2 else image


def _centre_crop(image: np.ndarray, side: int | None) -> np.ndarray:
    if side is None:
        return image
    y, x = image.shape[-2:]
    top, left = max(0, (y - side) // 2), max(0, (x - side) // 2)
    return image[..., top:top + side, left:left + side]


def write_sampling_view(
    path: str | Path,
    noisy: np.ndarray,
    samples: np.ndarray,
    mmse: np.ndarray,
    std: np.ndarray,
    target: np.ndarray | None = None,
    n_shown: int = 3,
    crop: int | None = 256,
    title: str = "",
    data_range: float | None = None,
) -> Path:
    """Write a PNG of the noisy input, a few posterior samples, the MMSE, the per-pixel std and the target.

    Noisy input, samples, MMSE and target share display limits (the 0.5-99.5
    percentiles of the MMSE and target), so their intensities compare; the
    std has its own colour bar. With a target, a line plot shows the PSNR of
    the mean of k samples against k (whole image, all channels).

    Parameters
    ----------
    path
        The PNG to write (atomically).
    noisy, mmse, std, target
        ``(C, Y, X)`` or ``(Y, X)`` arrays in raw intensities; channel 0 is shown.
    samples
        ``(N, C, Y, X)`` or ``(N, Y, X)`` posterior samples.
    n_shown
        Samples drawn as panels (the first ones; at most 3).
    crop
        Images larger than this are shown as their centre ``crop`` x ``crop``
        region (``None``: whole image). The PSNR curve uses the whole image.
    title
        Figure title, e.g. the file name.
    data_range
        PSNR data range; default the target's max - min.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    noisy, mmse, std = (_channels_first(a) for a in (noisy, mmse, std))
    samples = _channels_first(samples, 1)
    target = None if target is None else _channels_first(target)
    n, channels, height, width = samples.shape

    def shown(image: np.ndarray) -> np.ndarray:  # channel 0, centre crop
        return _centre_crop(np.asarray(image, np.float64)[0], crop)

    limits = display_range(np.stack([shown(mmse)] + ([shown(target)] if target is not None else [])))
    std_limits = (0.0, display_range(shown(std))[1])

    plt = pyplot()
    fig, axes = plt.subplots(2, 4, figsize=(14, 6.6))
    panels = [(noisy, "noisy input")]
    panels += [(samples[i], f"posterior sample {i + 1} of {n}") for i in range(min(n_shown, n, 3))]
    row = list(axes[0]) + list(axes[1])
    for ax, (image, name) in zip(row, panels):
        show_image(ax, shown(image), name, "intensity", limits)
    show_image(axes[1][0], shown(mmse), f"MMSE (mean of {n} samples)", "intensity", limits)
    show_image(axes[1][1], shown(std), "posterior std per pixel", "posterior std (intensity)", std_limits,
               cmap="magma")
    if target is not None:
        show_image(axes[1][2], shown(target), "target (ground truth)", "intensity", limits)
        curve = mean_of_k_psnr(samples, target, CURVE_KS, data_range)
        ax = axes[1][3]
        ks = [k for k, _ in curve]
        ax.plot(ks, [p for _, p in curve], "o-")
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks], fontsize=8)
        ax.minorticks_off()
        ax.set_xlabel("samples averaged, k (log scale)")
        ax.set_ylabel("PSNR of the mean of k (dB)")
        ax.set_title("PSNR against the target (whole image)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    for ax in row[len(panels):4] + ([] if target is not None else row[6:]):
        ax.axis("off")
    crop_note = f", centre {min(crop, height)} x {min(crop, width)} px of {height} x {width}" if crop and (
        height > crop or width > crop) else f", {height} x {width} px"
    channel_note = f", channel 0 of {channels}" if channels > 1 else ""
    fig.suptitle(f"{title}{': ' if title else ''}posterior samples{channel_note}{crop_note}", fontsize=11)
    save_figure(fig, Path(path))
    return Path(path)


@dataclass
class SamplingReport:
    """What :func:`predict_with_sampling_view` did.

    Attributes
    ----------
    written
        Every file written (TIFFs, sampling PNGs, PSNR JSONs).
    psnr
        With a target: input file name -> column -> PSNR in dB (the mean over the
        file's 2-D images), columns ``noisy input``, ``mean of k`` and the point outputs.
    notes
        Messages for the user (e.g. that the method is deterministic).
    """

    written: list[Path] = field(default_factory=list)
    psnr: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def pair_targets(inputs: Sequence[Path], target: str | Path) -> dict[Path, Path]:
    """Pair each input file with a target file: a single pair directly, otherwise as ``evaluate`` pairs files
    (:func:`~bmz_cosdd.analysis.evaluation_report.match_target`: same name, same stem, or a stem the input's
    stem extends with ``_``)."""
    files = find_files(target)
    if len(inputs) == 1 and len(files) == 1:
        return {inputs[0]: files[0]}
    pairs = {}
    for path in inputs:
        match = match_target(path, files)
        if match is None:
            raise UserError(f"no target for {path.name} in {target} (targets pair with inputs by file name or stem)")
        pairs[path] = match
    return pairs


def _read_target(item: InputFile, path: Path) -> np.ndarray:
    images = read_images(path, item.axes)
    if images.shape != item.samples.shape:
        raise UserError(f"target {path.name} holds images of shape {images.shape[1:]} x {len(images)}, its input "
                        f"{item.path.name} {item.samples.shape[1:]} x {len(item.samples)}")
    if any(image.max() == image.min() for image in images):
        raise UserError(f"target {path.name} has a constant image: the PSNR needs a data range")
    return images


def predict_with_sampling_view(
    trained: TrainedModel,
    inputs: Sequence[str | Path],
    axes: str,
    out_dir: str | Path,
    options: PredictOptions | None = None,
    target: str | Path | None = None,
    save_samples: bool = True,
    pattern: str = "*",
    tile: int = 512,
    seed: int = 0,
    ks: Sequence[int] = DEFAULT_KS,
    crop: int | None = 256,
    on_image: Callable[[Path, int, int], None] | None = None,
    residual: ResidualPairs | None = None,
    on_tile: Callable[[int, int], None] | None = None,
    say: Callable[[str], None] | None = None,
) -> SamplingReport:
    """Denoise files, keep the posterior samples, and write a sampling view per file.

    Beside the ``<stem>_<output>.tif`` files (``_samples.tif`` only with
    ``save_samples``), writes ``<stem>_sampling.png`` (see
    :func:`write_sampling_view`; the file's first 2-D image) and, with a
    ``target``, ``<stem>_sampling.json`` with the PSNR of the mean of k samples
    (:func:`mean_of_k_psnr`, per 2-D image and their mean). A method that returns
    no samples gets no view; with a target the PSNR of its outputs is reported.

    Parameters
    ----------
    trained
        From :func:`bmz_cosdd.inference.predictor.load_run`.
    inputs, axes, pattern, tile, seed
        As for :func:`bmz_cosdd.inference.predictor.predict_files`.
    out_dir
        Folder for every file written.
    options
        Prediction settings; ``keep_samples`` is turned on.
    target
        Ground-truth file or folder, paired with the inputs by :func:`pair_targets`.
    save_samples
        Also write the samples TIFF (a leading ``Q`` axis).
    ks
        Numbers of samples averaged in the PSNR table.
    crop
        Side of the centre region shown in the PNG.
    on_image
        Called with (path, index, count) after each file.
    residual
        Keeps images for the residual check (see :class:`~bmz_cosdd.inference.predictor.ResidualPairs`).
    on_tile, say
        Tile progress and the wasteful-tile warning, as for :func:`~bmz_cosdd.inference.predictor.predict_inputs`.

    Returns
    -------
    SamplingReport
    """
    import dataclasses

    options = dataclasses.replace(options or PredictOptions(), keep_samples=True)
    check_out_dir(out_dir)
    loaded = read_inputs(inputs, pattern, axes, trained.stats.n_channels, trained.config.data.spatial_dims)
    targets = {}
    if target is not None:
        pairs = pair_targets([item.path for item in loaded], target)
        targets = {item.path: (pairs[item.path], _read_target(item, pairs[item.path])) for item in loaded}
    report = SamplingReport()
    out = Path(out_dir)

    def on_outputs(item: InputFile, outputs: dict[str, list[np.ndarray]]) -> list[Path]:
        truth = targets.get(item.path)
        points = [name for name in outputs if name != "samples" and name not in SCALE_ONLY_OUTPUTS]
        if truth is not None:
            columns = {"noisy input": [psnr(x, t) for x, t in zip(item.samples, truth[1])]}
            columns.update({name: [psnr(v, t) for v, t in zip(outputs[name], truth[1])] for name in points})
        if "samples" not in outputs:
            if not report.notes:
                report.notes.append(
                    f"{trained.method.name} ({options.estimator or trained.method.estimators[0]}) is deterministic: "
                    "it returns no posterior samples, so no sampling view is written")
            if truth is not None:
                report.psnr[item.path.name] = {name: float(np.mean(v)) for name, v in columns.items()}
            return []
        samples = outputs["samples"]
        written = [write_sampling_view(
            out / f"{item.path.stem}_sampling.png", item.samples[0], samples[0],
            outputs.get("mmse", [samples[0].mean(0)])[0], outputs.get("std", [samples[0].std(0)])[0],
            None if truth is None else truth[1][0], crop=crop,
            title=f"{item.path.name}" + (f" (image 1 of {len(samples)})" if len(samples) > 1 else ""),
        )]
        if truth is not None:
            per_image = [mean_of_k_psnr(s, t, ks) for s, t in zip(samples, truth[1])]
            mean_of_k = [
                {"k": k, "psnr_db": float(np.mean([rows[i][1] for rows in per_image])),
                 "per_image_db": [rows[i][1] for rows in per_image]}
                for i, (k, _) in enumerate(per_image[0])
            ]
            table = {"noisy input": columns.pop("noisy input")}
            table.update({f"mean of {row['k']}": row["per_image_db"] for row in mean_of_k})
            table.update(columns)
            report.psnr[item.path.name] = {name: float(np.mean(v)) for name, v in table.items()}
            summary = {
                "input": item.path.name, "target": truth[0].name, "samples": int(samples[0].shape[0]),
                "images": len(samples), "seed": seed, "data_range": DATA_RANGE_NOTE,
                "psnr_db": report.psnr[item.path.name], "mean_of_k": mean_of_k,
            }
            json_path = out / f"{item.path.stem}_sampling.json"
            atomic_write_text(json_path, json.dumps(summary, indent=2) + "\n")
            written.append(json_path)
        return written

    report.written = predict_inputs(
        trained, loaded, out, options, tile, seed, on_image, on_outputs,
        skip_outputs=() if save_samples else ("samples",), residual=residual, on_tile=on_tile, say=say,
    )
    return report


def format_psnr_table(report: SamplingReport) -> str:
    """The PSNR table of a report: one row per input file, one column per estimate (dB)."""
    if not report.psnr:
        return ""
    columns = list(next(iter(report.psnr.values())))
    first = max(len("image"), *(len(name) for name in report.psnr))
    widths = [max(len(c), 8) for c in columns]
    lines = [f"PSNR (dB) against the target, mean over each file's 2-D images; data range: {DATA_RANGE_NOTE}",
             "  ".join(["image".ljust(first)] + [c.rjust(w) for c, w in zip(columns, widths)])]
    for name, row in report.psnr.items():
        lines.append("  ".join([name.ljust(first)] + [f"{row.get(c, float('nan')):.2f}".rjust(w)
                                                      for c, w in zip(columns, widths)]))
    return "\n".join(lines)
