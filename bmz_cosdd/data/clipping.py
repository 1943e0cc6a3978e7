"""Pixels clipped at either end of the data's range (a saturated detector, or values cut at zero).

One rule for every noise measurement of this project (``noise-model fit`` on a
calibration stack, ``inspect``'s variance against the signal): per channel, the
data's minimum (or maximum) value counts as clipped when more than
:data:`CLIPPED_FRACTION` of the pixels equal it exactly. Unclipped data reach
their own extreme value in a handful of pixels (about one in a million of a
camera's frame stack, even for integer counts); a detector that saturates, or
data cut at zero, pile a measurable fraction onto it. Clipped pixels do not show
the noise (their spread is cut off), so they are left out of noise fits with a
warning that gives their fraction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["CLIPPED_FRACTION", "ClippedEnd", "clipped_pixels"]

#: The data's minimum or maximum counts as clipped when more than this fraction of the pixels (per channel)
#: equal it exactly (0.1 %: ten pixels of a 100 x 100 stack; an unclipped end value holds a handful of pixels).
CLIPPED_FRACTION = 1e-3


@dataclass(frozen=True)
class ClippedEnd:
    """One clipped end of one channel: ``end`` is ``"minimum"`` or ``"maximum"``; ``fraction`` of its pixels."""

    channel: int
    end: str
    value: float
    fraction: float

    def describe(self, what: str = "pixels") -> str:
        """e.g. ``29.00% of the pixels of channel 0 are clipped at the data's minimum (value 0)``."""
        if self.end == "maximum":
            how = f"saturated (clipped at the data's maximum, value {self.value:g})"
        else:
            how = f"clipped at the data's minimum (value {self.value:g})"
        return f"{self.fraction:.2%} of the {what} of channel {self.channel} are {how}"


def clipped_pixels(
    arrays: Sequence[np.ndarray], fraction: float = CLIPPED_FRACTION
) -> tuple[list[np.ndarray], list[ClippedEnd]]:
    """Find the clipped pixels of ``arrays`` by the rule above, per channel over all arrays together.

    Parameters
    ----------
    arrays
        Images or frames, each (C, ...) with the channel first (any spatial shape).
    fraction
        More than this fraction of a channel's pixels at its minimum (maximum) value means clipped.

    Returns
    -------
    masks
        One bool array per input, True where a pixel sits at a clipped end of its channel.
    ends
        The clipped ends found (none for unclipped data), channel by channel, minimum first.
    """
    arrays = [np.asarray(a) for a in arrays]
    masks = [np.zeros(a.shape, dtype=bool) for a in arrays]
    ends: list[ClippedEnd] = []
    if not arrays:
        return masks, ends
    total = sum(a[0].size for a in arrays)
    for c in range(arrays[0].shape[0]):
        low = min(float(a[c].min()) for a in arrays)
        high = max(float(a[c].max()) for a in arrays)
        for end, value in (("minimum", low), ("maximum", high)):
            if end == "maximum" and high == low:
                continue  # a constant channel: one end, counted once
            at_end = [a[c] == value for a in arrays]
            share = sum(int(m.sum()) for m in at_end) / max(total, 1)
            if share > fraction:
                ends.append(ClippedEnd(c, end, value, share))
                for mask, hit in zip(masks, at_end):
                    mask[c] |= hit
    return masks, ends
