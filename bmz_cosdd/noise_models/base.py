"""Shared pieces of the pixel noise models.

The normalised-units wrapper, pair preparation for fitting, per-channel helpers,
``.npz`` save/load (no pickle) and a diagnostic plot.

Every model (:class:`~bmz_cosdd.noise_models.gmm.GMMNoiseModel`,
:class:`~bmz_cosdd.noise_models.histogram.HistogramNoiseModel`) takes tensors
shaped ``(B, C, ...)`` (channels on axis 1) in raw units and provides
``log_likelihood``, ``mean_variance`` and ``sample``, plus ``_log_likelihood``,
which returns the log-density in the compute precision (float64 when an input
is float64) so the wrapper can add its Jacobian without a float32 round trip.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from bmz_cosdd.data.io import atomic_write_bytes
from bmz_cosdd.errors import UserError

if TYPE_CHECKING:
    from bmz_cosdd.noise_models.gmm import GMMNoiseModel
    from bmz_cosdd.noise_models.histogram import HistogramNoiseModel

    NoiseModel = GMMNoiseModel | HistogramNoiseModel

__all__ = [
    "NormalisedNoiseModel",
    "load_noise_model",
    "plot_noise_model",
    "prepare_pairs",
    "save_noise_model",
]

METADATA_KEY = "bmz_cosdd_noise_model"
FORMAT_NAME = "bmz-cosdd-noise-model"
FORMAT_VERSION = 1
_STATE_PREFIX = "state."


# --------------------------------------------------------------------------- helpers


def channel_values(values: Sequence[float] | float, n_channels: int, name: str) -> list[float]:
    """One finite float per channel; a single value is repeated for every channel.

    Parameters
    ----------
    values : sequence of float or float
        One value, or ``n_channels`` values.
    n_channels : int
        The number of channels.
    name : str
        The argument's name, for the error message.

    Returns
    -------
    list of float
        ``n_channels`` values.
    """
    if isinstance(values, (int, float, np.floating, np.integer)):
        values = [values]
    out = [float(v) for v in values]
    if len(out) == 1:
        out = out * n_channels
    if len(out) != n_channels:
        raise UserError(f"{name}: need 1 or {n_channels} values (one per channel), got {len(out)}")
    if not all(math.isfinite(v) for v in out):
        raise UserError(f"{name}: values must be finite, got {out}")
    return out


def check_range(low: list[float], high: list[float], what: str) -> None:
    """Raise a :class:`UserError` unless ``low[c] < high[c]`` for every channel."""
    for c, (lo, hi) in enumerate(zip(low, high)):
        if not lo < hi:
            raise UserError(f"{what} range of channel {c} is empty ({lo} to {hi}); is the data constant?")


def check_channels(n_channels: int, *tensors: Tensor) -> None:
    """Raise a :class:`UserError` unless the tensors share one shape with ``n_channels`` on axis 1."""
    shape = tensors[0].shape
    for t in tensors[1:]:
        if t.shape != shape:
            raise UserError(f"noise model inputs differ in shape: {tuple(shape)} and {tuple(t.shape)}")
    if len(shape) < 2 or shape[1] != n_channels:
        raise UserError(
            f"noise model expects (B, {n_channels}, ...) with channels on axis 1, got shape {tuple(shape)}"
        )


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 when any input is float64, else float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def per_channel(values: Sequence[float], like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """``values`` (one per channel) shaped to broadcast against ``like`` (channels on axis 1)."""
    shape = (1, len(values)) + (1,) * (like.ndim - 2)
    return torch.tensor(list(values), dtype=dtype or like.dtype, device=like.device).reshape(shape)


def prepare_pairs(signal: np.ndarray, observation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate (signal, observation) pairs and flatten them to one row per pixel.

    Parameters
    ----------
    signal, observation : numpy.ndarray
        Same shape, ``(N, C, Y, X)`` or ``(C, Y, X)``, raw units.

    Returns
    -------
    signal, observation : numpy.ndarray
        float64 arrays shaped ``(M, C)``: one row per pixel, one column per channel.

    Raises
    ------
    UserError
        If the shapes differ, are not 3-D or 4-D, the arrays are empty, not
        real numbers, or hold NaN or infinite values.
    """
    arrays = []
    for name, value in (("signal", signal), ("observation", observation)):
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise UserError(f"noise model {name} is not an array of real numbers ({exc})") from exc
        arrays.append(array)
    s, x = arrays
    if s.shape != x.shape:
        raise UserError(f"noise model signal shape {s.shape} and observation shape {x.shape} differ")
    if s.ndim == 3:
        s, x = s[None], x[None]
    if s.ndim != 4:
        raise UserError(f"noise model pairs must be (N, C, Y, X) or (C, Y, X), got shape {s.shape}")
    if s.size == 0:
        raise UserError(f"noise model pairs are empty (shape {s.shape})")
    for name, array in (("signal", s), ("observation", x)):
        if not np.all(np.isfinite(array)):
            raise UserError(f"noise model {name} contains NaN or infinite values")
    n_channels = s.shape[1]
    return (
        np.moveaxis(s, 1, -1).reshape(-1, n_channels),
        np.moveaxis(x, 1, -1).reshape(-1, n_channels),
    )


def check_percentiles(percentiles: tuple[float, float]) -> tuple[float, float]:
    """Return ``percentiles`` as floats; raise a :class:`UserError` unless ``0 <= low < high <= 100``."""
    try:
        low, high = (float(p) for p in percentiles)
    except (TypeError, ValueError) as exc:
        raise UserError(f"percentiles must be two numbers, got {percentiles!r}") from exc
    if not 0.0 <= low < high <= 100.0:
        raise UserError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles!r}")
    return low, high


def signal_range(signal: np.ndarray, percentiles: tuple[float, float]) -> tuple[list[float], list[float]]:
    """Per-channel ``percentiles`` of ``signal`` (``(M, C)``), checked to be a non-empty range."""
    low, high = np.percentile(signal, check_percentiles(percentiles), axis=0)
    low, high = [float(v) for v in low], [float(v) for v in high]
    check_range(low, high, "signal")
    return low, high


# --------------------------------------------------------------------------- normalised units


class NormalisedNoiseModel(torch.nn.Module):
    """A raw-units noise model evaluated on normalised data ``x_n = (x - mean) / std``.

    The density of ``x_n`` given ``s_n`` follows by change of variables:
    ``log p_n(x_n | s_n) = log p(x | s) + log(std)`` with ``x = x_n * std + mean``
    and ``s = s_n * std + mean``, computed in float64.

    Parameters
    ----------
    model : GMMNoiseModel or HistogramNoiseModel
        The raw-units model.
    mean, std : sequence of float
        Per-channel normalisation statistics (one value, or one per channel);
        kept as Python floats so ``.float()`` or ``.half()`` cannot round them.
    """

    def __init__(self, model: NoiseModel, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.mean = channel_values(mean, model.n_channels, "normalisation mean")
        self.std = channel_values(std, model.n_channels, "normalisation std")
        if not all(v > 0 for v in self.std):
            raise UserError(f"normalisation std must be > 0, got {self.std}")

    @property
    def kind(self) -> str:
        """The wrapped model's kind."""
        return self.model.kind

    @property
    def n_channels(self) -> int:
        """The wrapped model's number of channels."""
        return self.model.n_channels

    def _to_raw(self, t: Tensor) -> Tensor:
        t = t.to(torch.float64)
        return t * per_channel(self.std, t) + per_channel(self.mean, t)

    def log_likelihood(self, x_n: Tensor, s_n: Tensor) -> Tensor:
        """Log-density of normalised observations given normalised signals.

        Parameters
        ----------
        x_n, s_n : Tensor
            ``(B, C, Y, X)`` in normalised units.

        Returns
        -------
        Tensor
            ``log p_n(x_n | s_n)`` per pixel, float32, shape of ``x_n``.
        """
        check_channels(self.n_channels, x_n, s_n)
        raw = self.model._log_likelihood(self._to_raw(x_n), self._to_raw(s_n))
        return (raw + torch.log(per_channel(self.std, raw))).to(torch.float32)

    def mean_variance(self, s_n: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of ``x_n`` given ``s_n``, in normalised units (float64)."""
        mean, var = self.model.mean_variance(self._to_raw(s_n))
        std = per_channel(self.std, mean)
        return (mean - per_channel(self.mean, mean)) / std, var / std**2

    def sample(self, s_n: Tensor, generator: torch.Generator) -> Tensor:
        """One draw of ``x_n`` per pixel of ``s_n``, in normalised units (float64)."""
        x = self.model.sample(self._to_raw(s_n), generator)
        return (x - per_channel(self.mean, x)) / per_channel(self.std, x)


# --------------------------------------------------------------------------- save / load


def _model_classes() -> dict[str, type]:
    from bmz_cosdd.noise_models.gmm import GMMNoiseModel
    from bmz_cosdd.noise_models.histogram import HistogramNoiseModel

    return {GMMNoiseModel.kind: GMMNoiseModel, HistogramNoiseModel.kind: HistogramNoiseModel}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"noise model info: {type(value).__name__} is not JSON-serialisable")


def save_noise_model(model: NoiseModel, path: str | Path) -> None:
    """Write a noise model to an ``.npz`` file, atomically and without pickle.

    The archive holds the model's ``state_dict`` arrays (named ``state.<key>``)
    and a JSON string (``bmz_cosdd_noise_model``) with the kind, the constructor
    arguments, the number of channels and the ``info`` dict.

    Parameters
    ----------
    model : GMMNoiseModel or HistogramNoiseModel
        The model (not a :class:`NormalisedNoiseModel`: save the raw model and
        the normalisation statistics separately).
    path : str or pathlib.Path
        Destination, written exactly as named; parent folders are created.
    """
    if getattr(model, "kind", None) not in _model_classes() or isinstance(model, NormalisedNoiseModel):
        raise TypeError(f"save_noise_model needs a GMMNoiseModel or HistogramNoiseModel, got {type(model).__name__}")
    metadata = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "kind": model.kind,
        "args": model.constructor_args(),
        "n_channels": model.n_channels,
        "info": model.info,
    }
    arrays: dict[str, np.ndarray] = {
        _STATE_PREFIX + key: value.detach().cpu().numpy() for key, value in model.state_dict().items()
    }
    arrays[METADATA_KEY] = np.array(json.dumps(metadata, default=_json_default))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_noise_model(path: str | Path) -> NoiseModel:
    """Read a noise model written by :func:`save_noise_model`.

    Parameters
    ----------
    path : str or pathlib.Path
        The ``.npz`` file; read with ``allow_pickle=False``.

    Returns
    -------
    GMMNoiseModel or HistogramNoiseModel
        The model, on the CPU, with its ``info`` restored.

    Raises
    ------
    UserError
        If the file is missing, not an ``.npz`` archive, has no noise-model
        metadata, names an unknown kind, or its arrays do not fit its metadata.
    """
    path = Path(path)

    def bad(reason: str) -> UserError:
        return UserError(f"{path} is not a bmz-cosdd noise model ({reason})")

    if not path.is_file():
        raise bad("no such file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise bad("not an .npz archive") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise bad("not an .npz archive")
    with archive:
        if METADATA_KEY not in archive.files:
            raise bad("no noise-model metadata in the archive")
        try:
            metadata = json.loads(str(archive[METADATA_KEY][()]))
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise bad("unreadable metadata") from exc
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
            raise bad("unrecognised metadata")
        if metadata.get("version") != FORMAT_VERSION:
            raise bad(f"unsupported format version {metadata.get('version')!r}")
        kind = metadata.get("kind")
        classes = _model_classes()
        if kind not in classes:
            raise bad(f"unknown kind {kind!r}")
        args = metadata.get("args")
        if not isinstance(args, dict):
            raise bad("no constructor arguments in the metadata")
        try:
            model = classes[kind](**args)
        except (TypeError, ValueError, UserError) as exc:
            raise bad(f"invalid constructor arguments: {str(exc).splitlines()[0]}") from exc
        try:
            state = {
                name[len(_STATE_PREFIX):]: torch.from_numpy(np.array(archive[name]))
                for name in archive.files
                if name.startswith(_STATE_PREFIX)
            }
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise bad("unreadable arrays") from exc
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise bad("its arrays do not match its metadata") from exc
    info = metadata.get("info", {})
    model.info = info if isinstance(info, dict) else {}
    return model


# --------------------------------------------------------------------------- plot


def _binned_moments(s: np.ndarray, x: np.ndarray, low: float, high: float, n_bins: int = 40) -> np.ndarray:
    """Rows ``(mean signal, mean observation, observation variance)`` of signal bins with >= 2 pairs."""
    inside = (s >= low) & (s <= high)
    s, x = s[inside], x[inside]
    index = np.minimum(((s - low) / (high - low) * n_bins).astype(np.int64), n_bins - 1)
    rows = []
    for b in range(n_bins):
        chosen = index == b
        if np.count_nonzero(chosen) >= 2:
            rows.append((s[chosen].mean(), x[chosen].mean(), x[chosen].var(ddof=1)))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


def plot_noise_model(
    model: NoiseModel,
    path: str | Path,
    signal: np.ndarray | None = None,
    observation: np.ndarray | None = None,
) -> None:
    """Plot a noise model's mean and variance against the signal, one row per channel.

    Parameters
    ----------
    model : GMMNoiseModel or HistogramNoiseModel
        The model; curves span its ``[min_signal, max_signal]`` range.
    path : str or pathlib.Path
        The PNG to write (atomically).
    signal, observation : numpy.ndarray, optional
        Pairs as for fitting (both or neither); their empirical mean and
        variance in 40 signal bins are drawn as dots.
    """
    from bmz_cosdd.plotting import pyplot, save_figure

    if (signal is None) != (observation is None):
        raise UserError("plot_noise_model needs both signal and observation, or neither")
    pairs = prepare_pairs(signal, observation) if signal is not None else None
    if pairs is not None and pairs[0].shape[1] != model.n_channels:
        raise UserError(
            f"the pairs have {pairs[0].shape[1]} channel(s) but the noise model has {model.n_channels}"
        )
    n_channels = model.n_channels
    grid = np.stack([np.linspace(lo, hi, 200) for lo, hi in zip(model.min_signal, model.max_signal)], axis=1)
    with torch.no_grad():
        mean, var = model.mean_variance(torch.from_numpy(grid))
    mean, var = mean.cpu().numpy(), var.cpu().numpy()

    plt = pyplot()
    fig, axes = plt.subplots(n_channels, 2, figsize=(9.0, 3.2 * n_channels), squeeze=False)
    for c in range(n_channels):
        ax_mean, ax_var = axes[c]
        ax_mean.plot(grid[:, c], mean[:, c], color="C0", label=f"{model.kind} model")
        ax_var.plot(grid[:, c], var[:, c], color="C0", label=f"{model.kind} model")
        if pairs is not None:
            moments = _binned_moments(pairs[0][:, c], pairs[1][:, c], model.min_signal[c], model.max_signal[c])
            ax_mean.plot(moments[:, 0], moments[:, 1], "o", color="C1", markersize=3, label="pairs (binned)")
            ax_var.plot(moments[:, 0], moments[:, 2], "o", color="C1", markersize=3, label="pairs (binned)")
        ax_mean.set_title(f"channel {c}: mean of x given s")
        ax_var.set_title(f"channel {c}: variance of x given s")
        for ax in (ax_mean, ax_var):
            ax.set_xlabel("signal s (raw units)")
            ax.legend(fontsize="small")
    save_figure(fig, Path(path))
