"""Run configuration: data, training and method settings, validated pydantic dataclasses, read from and
written to YAML.

A configuration is a tree of pydantic dataclasses (:data:`SETTINGS`): every value is checked when a
settings object is made or changed (types, ranges, NaN and Inf, rules between fields), and a bad value
is one line naming its field (:func:`from_dict`, :func:`validation_message`). Values are merged in the
order defaults < YAML file < command-line options, and the resolved tree is written to the run folder
so every run records exactly what it did (seeds included).
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import yaml
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from bmz_cosdd.errors import UserError

T = TypeVar("T")

#: How every settings class validates: unknown names refused, assignments checked, numbers accepted
#: as text (``--struct-mask 5``), NaN and Inf refused.
SETTINGS = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True, allow_inf_nan=False)


def settings(cls: type[T]) -> type[T]:
    """Make ``cls`` a validated settings class (a pydantic dataclass with :data:`SETTINGS`).

    An assignment that fails validation (a field's own rule or a rule between fields) leaves
    the object as it was.
    """
    made = dataclass(cls, config=SETTINGS)
    checked_setattr = made.__setattr__

    def __setattr__(self: Any, name: str, value: Any) -> None:
        before = self.__dict__.get(name, _MISSING)
        try:
            checked_setattr(self, name, value)
        except ValidationError:
            if before is not _MISSING:
                object.__setattr__(self, name, before)
            raise

    made.__setattr__ = __setattr__
    return made


_MISSING = object()


def latent_widths(widths: list[int], n_levels: int) -> list[int]:
    """A ladder VAE's latent channels per level: one width stands for every level; otherwise one per level
    (ValueError naming ``latent_channels`` and ``n_levels``)."""
    if len(widths) == 1 and n_levels > 1:
        widths = widths * n_levels
    if len(widths) != n_levels:
        raise ValueError(f"latent_channels has {len(widths)} entries but n_levels is {n_levels}")
    return widths


def check_levels(values: Optional[list], count: int, name: str) -> None:
    """A per-level setting (e.g. ``z_pool``) must hold one value per level: ValueError naming it."""
    if values is not None and len(values) != count:
        raise ValueError(f"{name} needs {count} values (one per level, finest first), got {len(values)}")


def _comma_separated(value: Any) -> Any:
    """``"8,8,16"`` (as typed on the command line) -> ``["8", "8", "16"]``; anything else unchanged."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _one_or_more(value: Any) -> Any:
    """A single path is a list of one (file names may hold commas)."""
    return [value] if isinstance(value, (str, Path)) else value


def _odd(value: int) -> int:
    if value % 2 == 0:
        raise ValueError("must be odd")
    return value


def _number(value: Any) -> Any:
    """Refuse ``true``/``false`` where a number is due (pydantic would read ``max_steps: true`` as 1)."""
    if isinstance(value, bool):
        raise ValueError("expected a number")
    return value


Number = BeforeValidator(_number)
Positive = Annotated[int, Number, Field(ge=1)]
NonNegative = Annotated[int, Number, Field(ge=0)]
PositiveFloat = Annotated[float, Number, Field(gt=0)]
NonNegativeFloat = Annotated[float, Number, Field(ge=0)]
Fraction = Annotated[float, Number, Field(ge=0, lt=1)]
Odd = Annotated[int, Number, Field(ge=1), AfterValidator(_odd)]
PositiveList = Annotated[list[Positive], BeforeValidator(_comma_separated)]
FloatList = Annotated[list[float], BeforeValidator(_comma_separated)]
PathList = Annotated[list[str], BeforeValidator(_one_or_more)]
BoolList = Annotated[list[bool], BeforeValidator(_comma_separated)]
OddList = Annotated[list[Odd], BeforeValidator(_comma_separated)]


def one_of(*choices: Any) -> AfterValidator:
    """A validator that accepts only ``choices`` (named in the error)."""
    def check(value: Any) -> Any:
        if value not in choices:
            raise ValueError(f"must be {', '.join(map(str, choices[:-1]))} or {choices[-1]}")
        return value

    return AfterValidator(check)


@settings
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

    paths: PathList = field(default_factory=list)
    pattern: str = "*"
    axes: str = "YX"
    spatial_dims: Annotated[int, one_of(2, 3)] = 2
    crop_size: Annotated[int, Field(ge=8)] = 64
    crop_depth: Optional[Positive] = None
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1
    val_crops: Positive = 64
    clip_percentiles: Optional[Annotated[FloatList, Field(min_length=2, max_length=2)]] = None

    @model_validator(mode="after")
    def _crop_depth_for_volumes(self) -> "DataConfig":
        if self.crop_depth is not None and self.spatial_dims != 3:
            raise ValueError("crop_depth (--crop-depth) is for volumes; add --spatial-dims 3 or drop it")
        if self.clip_percentiles is not None and not 0 <= self.clip_percentiles[0] < self.clip_percentiles[1] <= 100:
            raise ValueError(f"clip_percentiles must be 0 <= low < high <= 100, got {self.clip_percentiles}")
        return self


@settings
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

    batch_size: Positive = 4
    accumulate: Positive = 1
    lr: PositiveFloat = 2e-3
    lr_factor: Annotated[float, Field(gt=0, lt=1)] = 0.1
    lr_patience: NonNegative = 10
    max_steps: Optional[Positive] = None
    max_epochs: Optional[Positive] = 100
    max_time: Optional[PositiveFloat] = None
    steps_per_epoch: Positive = 100
    patience: Positive = 20
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    device: str = "auto"
    precision: Annotated[str, one_of("auto", "fp32", "bf16")] = "auto"

    @model_validator(mode="after")
    def _runnable(self) -> "TrainConfig":
        if self.max_steps is None and self.max_epochs is None and self.max_time is None:
            raise ValueError("set at least one of max_steps, max_epochs or max_time")
        if self.batch_size % self.accumulate:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of accumulate ({self.accumulate})")
        return self


@settings
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
    """Build the settings class ``cls`` from a mapping (a YAML section, or options as typed).

    Parameters
    ----------
    cls
        A class made with :func:`settings`.
    values
        Its field names and values; values as typed are converted (``"3"`` -> 3, ``"8,16"`` -> [8, 16]).
    where
        Prefix of the field names in messages, e.g. ``"model."``.

    Raises
    ------
    bmz_cosdd.errors.UserError
        One line naming the field, for an unknown name or a value of the wrong type, out of its
        range, NaN or Inf, or against a rule between fields.
    """
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(
            f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(where + k for k in unknown)}"
            f" (known: {', '.join(sorted(names))})"
        )
    try:
        return cls(**values)
    except ValidationError as exc:
        raise UserError(validation_message(exc, where)) from None


_PHRASES = {
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "int_type": "expected an integer",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "finite_number": "expected a finite number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected text",
    "list_type": "expected a list",
    "too_short": "needs {min_length} values",
    "too_long": "needs {max_length} values",
    "unexpected_keyword_argument": "unknown setting",
}


def validation_message(exc: ValidationError, where: str = "") -> str:
    """The first error of a pydantic validation as one line naming the field.

    ``model.n_levels: must be at least 1, got 0``; a rule between fields reads as its own text
    prefixed by the section (``data: crop_depth (--crop-depth) is for volumes; ...``).
    """
    error = exc.errors()[0]
    context = error.get("ctx") or {}
    if error["type"] == "value_error":
        text = str(context.get("error", error["msg"])).removeprefix("Value error, ")
    elif error["type"] in _PHRASES:
        text = _PHRASES[error["type"]].format(**context)
    else:
        text = error["msg"][:1].lower() + error["msg"][1:]
    loc = [str(part) for part in error["loc"] if isinstance(part, (str, int))]
    if not loc:
        return f"{where.rstrip('.')}: {text}" if where else text
    name = loc[0] + "".join(f"[{part}]" if part.isdigit() else "" for part in loc[1:])
    return f"{where}{name}: {text}, got {error.get('input')!r}"


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
