"""What a package costs to run: CPU time of one 512 x 512 image through its network, for the model card.

Measured when the package is built, on the machine that builds it, so a user can tell before
downloading whether a stochastic model at its number of posterior samples fits their hardware.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

#: The image's Y and X extent (raised to the package's grid when that needs more).
TIMED_YX = 512


@dataclass(frozen=True)
class PackageTiming:
    """One timed pass of the package's network.

    Parameters
    ----------
    shape
        The input, (1, C, [Z,] Y, X), normalised units.
    samples
        Posterior samples the package draws per image (None for a deterministic network).
    cpu_s, wall_s
        Process CPU time (all threads) and wall time of the pass, in seconds.
    threads
        Torch's intra-op threads during the pass.
    cpus
        CPUs of the machine (``os.cpu_count``) and its processor, as ``platform`` names it.
    """

    shape: tuple[int, ...]
    samples: int | None
    cpu_s: float
    wall_s: float
    threads: int
    cpus: int
    processor: str

    def sentence(self) -> str:
        """One sentence for the model card and the ``package`` command."""
        size = " x ".join(str(s) for s in self.shape[2:])
        what = f"{self.samples} posterior samples and their mean" if self.samples else "one pass"
        return (f"one {size} image ({what}) took {self.cpu_s:.1f} CPU-seconds ({self.wall_s:.1f} s wall,"
                f" {self.threads} torch thread(s) on a {self.cpus}-CPU {self.processor} machine, measured when the"
                " package was built)")

    def to_dict(self) -> dict:
        return {**asdict(self), "shape": list(self.shape)}


def timed_shape(n_channels: int, size_min: tuple[int, ...], size_step: tuple[int, ...]) -> tuple[int, ...]:
    """(1, C, [Z,] Y, X): Y and X the smallest valid extent of at least :data:`TIMED_YX`, Z (volumes) the
    package's minimum.

    >>> timed_shape(1, (8, 32, 32), (4, 16, 16))
    (1, 1, 8, 512, 512)
    >>> timed_shape(2, (40, 40), (24, 24))
    (1, 2, 520, 520)
    """
    def fit(minimum: int, step: int) -> int:
        if TIMED_YX <= minimum:
            return minimum
        return minimum + -(-(TIMED_YX - minimum) // step) * step

    yx = tuple(fit(m, s) for m, s in zip(size_min[-2:], size_step[-2:]))
    return (1, n_channels, *size_min[:-2], *yx)


def time_network(module: nn.Module, shape: tuple[int, ...], samples: int | None) -> PackageTiming:
    """CPU and wall time of one eager pass of the package's inference ``module`` (on the CPU) over a
    standard-normal input of ``shape`` (what the network sees after the package's normalisation).

    The package's TorchScript weights run the same operations; the first call is timed (no
    warm-up), as a user's first image would be.
    """
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cpu, wall = time.process_time(), time.perf_counter()
        module(x)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return PackageTiming(shape=tuple(shape), samples=samples, cpu_s=round(cpu, 2), wall_s=round(wall, 2),
                         threads=torch.get_num_threads(), cpus=os.cpu_count() or 1,
                         processor=_processor())


def _processor() -> str:
    """The CPU's model name (Linux: ``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
