"""Device and precision choice."""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from bmz_cosdd.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cpu`` and ``cuda[:i]`` are taken as given."""
    if name == "auto":
        return torch.device(device_type("auto"))
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device {name!r} (use auto, cpu or cuda[:index])") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device {name!r} (use auto, cpu or cuda[:index])")
    return device


def device_type(name: str = "auto") -> str:
    """``cuda`` or ``cpu``: where a run asking for device ``name`` would train (never raises).

    For settings chosen by hardware (COSDD's ``--preset auto``); :func:`resolve_device`
    checks the name.
    """
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if str(name).startswith("cuda") else "cpu"


def autocast_for(device: torch.device, precision: str = "auto") -> ContextManager:
    """bf16 autocast where it pays (CUDA); full precision elsewhere."""
    if precision not in ("auto", "fp32", "bf16"):
        raise UserError(f"unknown precision {precision!r} (use auto, fp32 or bf16)")
    if precision == "bf16" and device.type != "cuda":
        raise UserError("bf16 precision is only supported on CUDA devices (it is slower than fp32 on CPUs)")
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
