"""The blind-spot masker shared by Noise2Void, N2V2, StructN2V and PSF-N2V.

A training batch is turned into network inputs in which a stratified random
subset of pixels (the *centres*) no longer carries its own value: each centre
is replaced by the value of a random neighbour (N2V) or by the median of its
neighbours (N2V2), and, for StructN2V, the pixels of a blind mask around each
centre are overwritten with Gaussian noise of the plane's own mean and
standard deviation. The loss is then computed
at the centres only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from bmz_cosdd.errors import UserError

REPLACEMENTS = ("neighbour", "median")


@dataclass
class MaskedBatch:
    """A batch prepared for blind-spot training.

    Attributes
    ----------
    inputs
        ``(B, C, Y, X)`` network input: the batch with the centres replaced and
        the blind-mask pixels randomised; same dtype and device as the batch.
    loss_mask
        Boolean ``(B, C, Y, X)`` tensor, True exactly at the masked centres.
    """

    inputs: torch.Tensor
    loss_mask: torch.Tensor


def _blind_offsets(blind_mask: np.ndarray | None) -> list[tuple[int, int]]:
    """Offsets ``(dy, dx)`` hidden by ``blind_mask``, centre excluded."""
    if blind_mask is None:
        return []
    mask = np.asarray(blind_mask)
    if mask.ndim != 2:
        raise UserError(f"blind mask must be 2-D, got {mask.ndim} dimensions (shape {mask.shape})")
    height, width = mask.shape
    if height % 2 == 0 or width % 2 == 0:
        raise UserError(f"blind mask must have odd height and width, got shape {height}x{width}")
    cy, cx = height // 2, width // 2
    return [
        (int(iy) - cy, int(ix) - cx)
        for iy, ix in zip(*np.nonzero(mask))
        if (iy, ix) != (cy, cx)
    ]


class BlindSpotMasker:
    """Masks a stratified random subset of pixels for blind-spot training.

    Parameters
    ----------
    fraction
        Expected fraction of pixels masked per plane, in ``(0, 0.5]``.
    window
        Odd side (>= 3) of the square neighbourhood the replacement comes from.
    replacement
        ``"neighbour"``: the value of a uniformly chosen neighbour (N2V);
        ``"median"``: the median of the neighbours (N2V2).
    blind_mask
        Optional 2-D array with odd sides, centred on the masked pixel; its
        nonzero entries (besides the centre) are hidden as well (StructN2V):
        they are never used as replacement and are overwritten with Gaussian
        noise of the plane's own mean and standard deviation.

    Raises
    ------
    UserError
        If an option is out of range, or the blind mask hides every pixel of
        the window.

    Attributes
    ----------
    blind_offsets
        The ``(dy, dx)`` offsets the blind mask hides besides the centre (empty for N2V).
    """

    def __init__(
        self,
        fraction: float = 0.02,
        window: int = 5,
        replacement: str = "neighbour",
        blind_mask: np.ndarray | None = None,
    ) -> None:
        if not 0.0 < fraction <= 0.5:
            raise UserError(f"masked fraction must be in (0, 0.5], got {fraction}")
        if int(window) != window or window < 3 or window % 2 == 0:
            raise UserError(f"masking window must be an odd integer >= 3, got {window}")
        if replacement not in REPLACEMENTS:
            raise UserError(
                f"replacement must be one of {', '.join(REPLACEMENTS)}, got {replacement!r}"
            )
        self.fraction = float(fraction)
        self.window = int(window)
        self.replacement = replacement

        # Cell side g and per-cell count k = base (+1 with probability extra), so
        # that the expected count per cell is exactly fraction * g * g. The small
        # tolerance keeps e.g. fraction 0.25 from rounding up to g = 3.
        self._cell = math.ceil(math.sqrt(1.0 / self.fraction) - 1e-9)
        expected = self.fraction * self._cell**2
        self._base = math.floor(expected)
        self._extra = expected - self._base

        self.blind_offsets = _blind_offsets(blind_mask)
        half = self.window // 2
        steps = torch.arange(-half, half + 1)
        self._dy = steps.repeat_interleave(self.window)
        self._dx = steps.repeat(self.window)
        allowed = (self._dy != 0) | (self._dx != 0)
        for dy, dx in self.blind_offsets:
            if abs(dy) <= half and abs(dx) <= half:
                allowed[(dy + half) * self.window + (dx + half)] = False
        if not bool(allowed.any()):
            raise UserError(
                f"the blind mask hides every neighbour in the {self.window}x{self.window} "
                "window; use a larger window"
            )
        self._allowed = allowed
        self._blind_dy = torch.tensor([o[0] for o in self.blind_offsets], dtype=torch.long)
        self._blind_dx = torch.tensor([o[1] for o in self.blind_offsets], dtype=torch.long)

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> MaskedBatch:
        """Mask ``batch``.

        Parameters
        ----------
        batch
            Normalised float tensor ``(B, C, Y, X)`` on any device; not modified.
        generator
            CPU generator; every random number is drawn from it, so the same
            generator state and batch give the same result on any device.

        Returns
        -------
        MaskedBatch
            The network inputs and the loss mask.

        Raises
        ------
        UserError
            If the planes are too small to offer any neighbour to a centre.
        """
        if batch.ndim != 4:
            raise ValueError(f"batch must have shape (B, C, Y, X), got {tuple(batch.shape)}")
        n_b, n_c, height, width = batch.shape
        device = batch.device
        centres = self._choose_centres(n_b, n_c, height, width, generator)
        inputs = batch.clone()

        b, c, y, x = centres.nonzero().unbind(1)
        if b.numel() > 0:
            src_y = y[:, None] + self._dy
            src_x = x[:, None] + self._dx
            valid = (
                self._allowed
                & (src_y >= 0)
                & (src_y < height)
                & (src_x >= 0)
                & (src_x < width)
            )
            if not bool(valid.any(1).all()):
                raise UserError(
                    f"image planes of {height}x{width} pixels are too small for a "
                    f"{self.window}x{self.window} masking window with this blind mask"
                )
            b_d, c_d, y_d, x_d = (t.to(device) for t in (b, c, y, x))
            if self.replacement == "neighbour":
                pick = torch.multinomial(valid.float(), 1, generator=generator).squeeze(1)
                sy = (y + self._dy[pick]).to(device)
                sx = (x + self._dx[pick]).to(device)
                values = batch[b_d, c_d, sy, sx]
            else:
                sy = src_y.clamp(0, height - 1).to(device)
                sx = src_x.clamp(0, width - 1).to(device)
                around = batch[b_d[:, None], c_d[:, None], sy, sx]
                nan = torch.tensor(float("nan"), dtype=batch.dtype, device=device)
                around = torch.where(valid.to(device), around, nan)
                values = torch.nanmedian(around, dim=1).values
            inputs[b_d, c_d, y_d, x_d] = values

            if self.blind_offsets:
                by = y[:, None] + self._blind_dy
                bx = x[:, None] + self._blind_dx
                inside = (by >= 0) & (by < height) & (bx >= 0) & (bx < width)
                # A boolean field rather than index_put with duplicate indices
                # (overlapping blind masks), which is not deterministic on GPU.
                hidden = torch.zeros(n_b, n_c, height, width, dtype=torch.bool)
                n_blind = self._blind_dy.numel()
                hidden[
                    b[:, None].expand(-1, n_blind)[inside],
                    c[:, None].expand(-1, n_blind)[inside],
                    by[inside],
                    bx[inside],
                ] = True
                # Random values with the plane's own mean and spread: N(0, 1) values in a dark
                # or bright crop shift the statistics batch norm learns, and the network's
                # output at inference (StructN2V then made images worse than their input).
                hidden = hidden.to(device)
                noise = torch.randn(int(hidden.sum()), generator=generator).to(device=device, dtype=batch.dtype)
                mean = batch.mean(dim=(2, 3), keepdim=True).expand_as(batch)[hidden]
                std = batch.std(dim=(2, 3), keepdim=True).expand_as(batch)[hidden]
                inputs[hidden] = noise * std + mean

        return MaskedBatch(inputs=inputs, loss_mask=centres.to(device))

    def _choose_centres(
        self, n_b: int, n_c: int, height: int, width: int, generator: torch.Generator
    ) -> torch.Tensor:
        """Stratified boolean ``(B, C, Y, X)`` CPU mask of the centres."""
        g = self._cell
        cells_y, cells_x = -(-height // g), -(-width // g)
        shape = (n_b, n_c, cells_y, cells_x)
        draws = torch.rand(*shape, g * g, generator=generator)
        count = self._base + (torch.rand(*shape, generator=generator) < self._extra).long()
        rank = draws.argsort(-1).argsort(-1)
        chosen = rank < count[..., None]
        chosen = chosen.view(*shape, g, g).permute(0, 1, 2, 4, 3, 5)
        chosen = chosen.reshape(n_b, n_c, cells_y * g, cells_x * g)
        return chosen[:, :, :height, :width].contiguous()
