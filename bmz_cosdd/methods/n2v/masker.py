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
        ``(B, C, [Z,] Y, X)`` network input: the batch with the centres replaced
        and the blind-mask pixels randomised; same dtype and device as the batch.
    loss_mask
        Boolean tensor of the batch's shape, True exactly at the masked centres.
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
        Odd side (>= 3) of the square (in 3-D: cubic) neighbourhood the replacement
        comes from.
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
        self.blind_offsets = _blind_offsets(blind_mask)
        self._layouts: dict[int, _Layout] = {}
        self._layout(2)  # a blind mask that hides the whole window: one clear line now

    def _layout(self, dims: int) -> "_Layout":
        if dims not in self._layouts:
            self._layouts[dims] = _Layout(self.fraction, self.window, self.blind_offsets, dims)
        return self._layouts[dims]

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> MaskedBatch:
        """Mask ``batch``.

        Parameters
        ----------
        batch
            Normalised float tensor ``(B, C, Y, X)`` or ``(B, C, Z, Y, X)`` on any
            device; not modified. In 3-D the window is a cube and a blind mask
            applies within the centre's Z plane.
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
        if batch.ndim not in (4, 5):
            raise ValueError(f"batch must have shape (B, C, [Z,] Y, X), got {tuple(batch.shape)}")
        layout = self._layout(batch.ndim - 2)
        n_b, n_c, *sizes = batch.shape
        size = torch.tensor(sizes)
        device = batch.device
        centres = layout.choose_centres(n_b, n_c, sizes, generator)
        inputs = batch.clone()

        found = centres.nonzero()
        b, c, coords = found[:, 0], found[:, 1], found[:, 2:]
        if b.numel() > 0:
            # (centres, window offsets, spatial axes)
            source = coords[:, None, :] + layout.offsets
            valid = layout.allowed & ((source >= 0) & (source < size)).all(-1)
            if not bool(valid.any(1).all()):
                shape_text = "x".join(str(n) for n in sizes)
                window_text = "x".join([str(self.window)] * len(sizes))
                raise UserError(
                    f"image planes of {shape_text} pixels are too small for a "
                    f"{window_text} masking window with this blind mask"
                )
            b_d, c_d = b.to(device), c.to(device)
            at = [t.to(device) for t in coords.unbind(1)]
            if self.replacement == "neighbour":
                pick = torch.multinomial(valid.float(), 1, generator=generator).squeeze(1)
                picked = (coords + layout.offsets[pick]).to(device)
                values = batch[(b_d, c_d, *picked.unbind(1))]
            else:
                clamped = torch.minimum(source.clamp(min=0), size - 1).to(device)
                around = batch[(b_d[:, None], c_d[:, None], *clamped.unbind(-1))]
                nan = torch.tensor(float("nan"), dtype=batch.dtype, device=device)
                around = torch.where(valid.to(device), around, nan)
                values = torch.nanmedian(around, dim=1).values
            inputs[(b_d, c_d, *at)] = values

            if self.blind_offsets:
                hidden_at = coords[:, None, :] + layout.blind
                inside = ((hidden_at >= 0) & (hidden_at < size)).all(-1)
                # A boolean field rather than index_put with duplicate indices
                # (overlapping blind masks), which is not deterministic on GPU.
                hidden = torch.zeros(batch.shape, dtype=torch.bool)
                n_blind = layout.blind.shape[0]
                hidden[(
                    b[:, None].expand(-1, n_blind)[inside],
                    c[:, None].expand(-1, n_blind)[inside],
                    *hidden_at[inside].unbind(-1),
                )] = True
                # Random values with the plane's own mean and spread: N(0, 1) values in a dark
                # or bright crop shift the statistics batch norm learns, and the network's
                # output at inference (StructN2V then made images worse than their input).
                hidden = hidden.to(device)
                noise = torch.randn(int(hidden.sum()), generator=generator).to(device=device, dtype=batch.dtype)
                spatial = tuple(range(2, batch.ndim))
                mean = batch.mean(dim=spatial, keepdim=True).expand_as(batch)[hidden]
                std = batch.std(dim=spatial, keepdim=True).expand_as(batch)[hidden]
                inputs[hidden] = noise * std + mean

        return MaskedBatch(inputs=inputs, loss_mask=centres.to(device))


class _Layout:
    """The masker's geometry for one number of spatial axes (2 or 3).

    Stratification: the image is cut into cells of side ``g`` and each cell holds
    ``base`` centres (one more with probability ``extra``), so the expected count
    per cell is exactly ``fraction * g**dims``.
    """

    def __init__(self, fraction: float, window: int, blind_offsets: list[tuple[int, int]], dims: int) -> None:
        # The small tolerance keeps e.g. fraction 0.25 from rounding up to g = 3.
        root = math.sqrt(1.0 / fraction) if dims == 2 else (1.0 / fraction) ** (1.0 / dims)
        self.dims = dims
        self.cell = math.ceil(root - 1e-9)
        expected = fraction * self.cell**dims
        self.base = math.floor(expected)
        self.extra = expected - self.base

        half = window // 2
        steps = torch.arange(-half, half + 1)
        # Last axis fastest: the same order as the 2-D window has always had.
        self.offsets = torch.cartesian_prod(*[steps] * dims).reshape(-1, dims)
        # A 2-D blind mask hides its offsets within the centre's own plane.
        lead = [0] * (dims - 2)
        self.blind = torch.tensor([lead + [dy, dx] for dy, dx in blind_offsets], dtype=torch.long).reshape(-1, dims)
        allowed = (self.offsets != 0).any(1)
        for offset in self.blind.tolist():
            if all(abs(o) <= half for o in offset):
                allowed[_flat_index(offset, half, window)] = False
        if not bool(allowed.any()):
            window_text = "x".join([str(window)] * dims)
            raise UserError(f"the blind mask hides every neighbour in the {window_text} window; use a larger window")
        self.allowed = allowed

    def choose_centres(self, n_b: int, n_c: int, sizes: list[int], generator: torch.Generator) -> torch.Tensor:
        """Stratified boolean ``(B, C, *sizes)`` CPU mask of the centres."""
        g, d = self.cell, self.dims
        cells = [-(-n // g) for n in sizes]
        shape = (n_b, n_c, *cells)
        draws = torch.rand(*shape, g**d, generator=generator)
        count = self.base + (torch.rand(*shape, generator=generator) < self.extra).long()
        rank = draws.argsort(-1).argsort(-1)
        chosen = rank < count[..., None]
        # (B, C, cells..., g...) -> (B, C, cell_0, g, cell_1, g, ...): each cell next to its pixels.
        order = [0, 1] + [axis for k in range(d) for axis in (2 + k, 2 + d + k)]
        chosen = chosen.view(*shape, *[g] * d).permute(*order)
        chosen = chosen.reshape(n_b, n_c, *[n * g for n in cells])
        return chosen[(slice(None), slice(None), *[slice(0, n) for n in sizes])].contiguous()


def _flat_index(offset: list[int], half: int, window: int) -> int:
    index = 0
    for o in offset:
        index = index * window + (o + half)
    return index
