"""Run configuration: data, training and method settings, read from and written to YAML.

A configuration is a tree of dataclasses. Values are merged in the order
defaults < YAML file < command-line options, and the resolved tree is written
to the run folder so every run records exactly what it did (seeds included).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from bmz_cosdd.errors import UserError

T = TypeVar("T")


@dataclass
class DataConfig:
    """Where the training images are and how they are cut up.

    Parameters
    ----------
    paths
        Files or folders holding the images.
    pattern
        Glob pattern applied inside folders.
    axes
        Axes string of the stored arrays, e.g. ``SYX``, ``YX``, ``SCYX``, ``TYX``, ``ZYX``.
    spatial_dims
        ``2``: every Z slice, T frame and S sample is a 2-D image. ``3``: the
        images are volumes with Z a spatial axis (``axes`` must contain ``Z``);
        S and T are samples.
    crop_size
        Side length of the square training and validation crops (in y and x).
    crop_depth
        Z extent of the crops when ``spatial_dims`` is 3; None means ``crop_size``.
    val_fraction
        Fraction of the images (or of the tiles of a single image) kept for validation.
    val_crops
        Most validation crops used; they are fixed so the validation loss is deterministic.
    clip_percentiles
        Optional ``[low, high]`` percentiles at which outliers are clipped before normalisation.
    """

    paths: list[str] = field(default_factory=list)
    pattern: str = "*"
    axes: str = "YX"
    spatial_dims: int = 2
    crop_size: int = 64
    crop_depth: int | None = None
    val_fraction: float = 0.1
    val_crops: int = 64
    clip_percentiles: list[float] | None = None


@dataclass
class TrainConfig:
    """How long and how the trainer runs.

    Parameters
    ----------
    batch_size
        Crops per optimiser step (split into ``accumulate`` virtual batches).
    accumulate
        Number of virtual batches whose gradients are summed before a step.
    lr
        Learning rate of every optimiser the method creates.
    lr_factor, lr_patience
        ``ReduceLROnPlateau`` settings (patience counted in validations).
    max_steps, max_epochs, max_time
        Limits; training stops at the first one reached. ``max_time`` is in seconds.
        An epoch is ``steps_per_epoch`` optimiser steps.
    steps_per_epoch
        Optimiser steps between validations.
    patience
        Early stopping: validations without improvement of the monitored loss.
    seed
        Seeds the model initialisation, the crop sampler and the training noise.
    device
        ``auto`` (CUDA if present, else CPU), ``cpu`` or ``cuda[:i]``.
    precision
        ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``fp32`` or ``bf16``.
    """

    batch_size: int = 4
    accumulate: int = 1
    lr: float = 2e-3
    lr_factor: float = 0.1
    lr_patience: int = 10
    max_steps: int | None = None
    max_epochs: int | None = 100
    max_time: float | None = None
    steps_per_epoch: int = 100
    patience: int = 20
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"


@dataclass
class RunConfig:
    """Everything a run needs: method name, method settings, data and training."""

    method: str
    model: Any
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "model": to_dict(self.model),
            "data": to_dict(self.data),
            "train": to_dict(self.train),
        }


def to_dict(obj: Any) -> Any:
    """Turn a dataclass tree into plain YAML/JSON-compatible values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def from_dict(cls: type[T], values: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, checking names and coercing simple types.

    Raises
    ------
    UserError
        For an unknown key or a value of the wrong type.
    """
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(
            f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(where + k for k in unknown)}"
            f" (known: {', '.join(sorted(names))})"
        )
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _coerce(hints[name], value, where + name)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where + ".")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise UserError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            as_float = float(value)
        except ValueError:
            raise UserError(f"{where}: expected an integer, got {value!r}") from None
        if not math.isfinite(as_float) or as_float != int(as_float):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return int(as_float)
    if tp is float:
        if isinstance(value, bool):
            raise UserError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise UserError(f"{where}: expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise UserError(f"{where}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise UserError(f"{where}: expected text, got {value!r}")
        return str(value)
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; one clear line if the file is missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"config file {path} is not valid YAML{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    return data


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)
