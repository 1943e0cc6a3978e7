"""Tests of the blind-spot masker shared by the Noise2Void family."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bmz_cosdd.errors import UserError
from bmz_cosdd.methods.n2v.masker import REPLACEMENTS, BlindSpotMasker, MaskedBatch

# Unique (integer) pixel values start here; the blind-mask noise is never an integer.
BASE = 1000.0
CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])
BLIND_MASKS = {
    "horizontal": np.ones((1, 9)),
    "vertical": np.ones((5, 1)),
    "cross": CROSS,
}


def _unique(shape: tuple[int, ...]) -> torch.Tensor:
    """A float64 batch in which every pixel has its own integer value (float64: random
    noise values never coincide with one by chance)."""
    return BASE + torch.arange(math.prod(shape), dtype=torch.float64).reshape(shape)


def _mask(masker: BlindSpotMasker, batch: torch.Tensor, seed: int) -> MaskedBatch:
    return masker(batch, torch.Generator().manual_seed(seed))


def _offsets(blind: np.ndarray) -> set[tuple[int, int]]:
    cy, cx = blind.shape[0] // 2, blind.shape[1] // 2
    return {(int(i) - cy, int(j) - cx) for i, j in zip(*np.nonzero(blind))} - {(0, 0)}


def _hidden(loss_mask: np.ndarray, blind: np.ndarray) -> np.ndarray:
    """Pixels that lie in the blind mask of some centre (computed independently)."""
    hidden = np.zeros_like(loss_mask)
    _, _, height, width = loss_mask.shape
    for b, c, y, x in np.argwhere(loss_mask):
        for dy, dx in _offsets(blind):
            if 0 <= y + dy < height and 0 <= x + dx < width:
                hidden[b, c, y + dy, x + dx] = True
    return hidden


def _sources(batch: torch.Tensor, masked: MaskedBatch, keep: np.ndarray | None = None):
    """Centre positions and the positions their (unique) input values came from."""
    loss = masked.loss_mask.numpy()
    if keep is not None:
        loss = loss & keep
    centres = np.argwhere(loss)
    values = masked.inputs.numpy()[tuple(centres.T)]
    assert np.all(values == np.round(values)), "a replacement is not an original value"
    sources = np.stack(np.unravel_index((values - BASE).astype(np.int64), batch.shape), 1)
    return centres, sources


@pytest.mark.parametrize("replacement", REPLACEMENTS)
@pytest.mark.parametrize(("shape", "fraction"), [((2, 2, 8, 8), 0.5), ((1, 3, 32, 40), 0.1), ((4, 1, 7, 9), 0.02)])
def test_masked_pixels_never_carry_their_own_value(replacement, shape, fraction):
    masker = BlindSpotMasker(fraction=fraction, replacement=replacement)
    batch = _unique(shape)
    for seed in range(25):
        masked = _mask(masker, batch, seed)
        loss = masked.loss_mask
        assert loss.dtype == torch.bool and loss.shape == batch.shape
        assert loss.any()
        assert not torch.any(masked.inputs[loss] == batch[loss])
        # Nothing but the centres changes without a blind mask.
        torch.testing.assert_close(masked.inputs[~loss], batch[~loss], rtol=0, atol=0)


@pytest.mark.parametrize("name", list(BLIND_MASKS))
@pytest.mark.parametrize("shape", [(2, 1, 9, 11), (1, 2, 32, 32)])
def test_blind_mask_is_never_a_source_and_is_randomised(name, shape):
    blind = BLIND_MASKS[name]
    blind_offsets = _offsets(blind)
    masker = BlindSpotMasker(fraction=0.1, window=5, blind_mask=blind)
    batch = _unique(shape)
    for seed in range(15):
        masked = _mask(masker, batch, seed)
        loss = masked.loss_mask.numpy()
        hidden = _hidden(loss, blind)
        assert hidden.any()
        inputs, original = masked.inputs.numpy(), batch.numpy()

        # Blind-mask pixels inside the image hold noise, not original values.
        noise = inputs[hidden]
        assert not np.any(np.isin(noise, original)) and np.all(noise != np.round(noise))
        # Everything that is neither a centre nor hidden is untouched.
        untouched = ~loss & ~hidden
        np.testing.assert_array_equal(inputs[untouched], original[untouched])

        centres, sources = _sources(batch, masked, keep=~hidden)
        assert len(centres) > 0
        np.testing.assert_array_equal(sources[:, :2], centres[:, :2])
        for dy, dx in sources[:, 2:] - centres[:, 2:]:
            assert abs(dy) <= 2 and abs(dx) <= 2
            assert (dy, dx) != (0, 0)
            assert (dy, dx) not in blind_offsets


def test_blind_mask_noise_has_the_planes_own_mean_and_spread():
    """So that layer statistics (batch norm) are the same with and without masking."""
    masker = BlindSpotMasker(fraction=0.05, window=5, blind_mask=np.ones((1, 9)))
    batch = torch.randn(8, 2, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    batch = batch * torch.tensor([0.5, 3.0]).view(1, 2, 1, 1) + torch.arange(8.0).view(8, 1, 1, 1) - 4.0
    masked = _mask(masker, batch, 0)
    hidden = _hidden(masked.loss_mask.numpy(), np.ones((1, 9)))
    for b in range(8):
        for c in range(2):
            noise = masked.inputs.numpy()[b, c][hidden[b, c]]
            plane = batch[b, c].numpy()
            assert noise.size > 100 and len(np.unique(noise)) == noise.size
            assert abs(noise.mean() - plane.mean()) < 0.15 * plane.std()
            assert abs(noise.std() / plane.std() - 1) < 0.15


@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.5])
@pytest.mark.parametrize("size", [128, 50])
def test_loss_mask_fraction_and_stratification(fraction, size):
    masker = BlindSpotMasker(fraction=fraction)
    batch = _unique((6, 2, size, size))
    masked = _mask(masker, batch, 7)
    loss = masked.loss_mask
    changed = masked.inputs != batch
    assert torch.equal(changed, loss)

    assert abs(loss.float().mean().item() - fraction) <= 0.05 * fraction

    g = math.ceil(math.sqrt(1 / fraction) - 1e-9)
    full = size - size % g
    cells = loss[:, :, :full, :full].reshape(6, 2, full // g, g, full // g, g).sum((3, 5))
    assert cells.min().item() >= math.floor(fraction * g * g)
    assert cells.max().item() <= math.floor(fraction * g * g) + 1


def _offset_counts(masker: BlindSpotMasker, shape, seeds, where) -> dict[tuple[int, int], int]:
    """Counts of chosen neighbour offsets over centres selected by ``where(y, x)``."""
    batch = _unique(shape)
    counts: dict[tuple[int, int], int] = {}
    for seed in seeds:
        centres, sources = _sources(batch, _mask(masker, batch, seed))
        np.testing.assert_array_equal(sources[:, :2], centres[:, :2])
        keep = where(centres[:, 2], centres[:, 3])
        for dy, dx in sources[keep, 2:] - centres[keep, 2:]:
            counts[(int(dy), int(dx))] = counts.get((int(dy), int(dx)), 0) + 1
    return counts


@pytest.mark.parametrize(("cy", "cx"), [(0, 0), (0, 5), (5, 0), (5, 5), (0, 3), (4, 5)])
def test_border_neighbours_are_uniform_over_the_image_part_of_the_window(cy, cx):
    height = width = 6
    masker = BlindSpotMasker(fraction=0.5, window=5)
    counts = _offset_counts(
        masker, (4000, 1, height, width), [1, 2], lambda y, x: (y == cy) & (x == cx)
    )
    expected_offsets = {
        (dy, dx)
        for dy in range(-2, 3)
        for dx in range(-2, 3)
        if (dy, dx) != (0, 0) and 0 <= cy + dy < height and 0 <= cx + dx < width
    }
    assert set(counts) == expected_offsets
    total = sum(counts.values())
    assert total > 3000
    expected = total / len(expected_offsets)
    for offset, count in counts.items():
        assert abs(count - expected) < 0.2 * expected, (offset, count, expected)
    chi2 = sum((count - expected) ** 2 / expected for count in counts.values())
    # Far above the 99.99% quantile for up to 14 degrees of freedom (~38).
    assert chi2 < 45


def test_interior_neighbours_are_uniform_and_unbiased():
    masker = BlindSpotMasker(fraction=0.1, window=5)
    counts = _offset_counts(
        masker, (100, 1, 32, 32), [3, 4], lambda y, x: (y >= 2) & (y < 30) & (x >= 2) & (x < 30)
    )
    assert len(counts) == 24 and (0, 0) not in counts
    total = sum(counts.values())
    expected = total / 24
    for offset, count in counts.items():
        assert abs(count - expected) < 0.2 * expected, (offset, count, expected)
    mean_dy = sum(dy * n for (dy, _), n in counts.items()) / total
    mean_dx = sum(dx * n for (_, dx), n in counts.items()) / total
    assert abs(mean_dy) < 0.06 and abs(mean_dx) < 0.06


@pytest.mark.parametrize("blind", [None, CROSS, np.ones((1, 9))])
def test_median_matches_hand_computed_median(blind):
    masker = BlindSpotMasker(fraction=0.1, window=5, replacement="median", blind_mask=blind)
    batch = torch.randn(2, 2, 12, 13, generator=torch.Generator().manual_seed(0))
    masked = _mask(masker, batch, 11)
    loss = masked.loss_mask.numpy()
    hidden = _hidden(loss, blind) if blind is not None else np.zeros_like(loss)
    excluded = _offsets(blind) if blind is not None else set()
    original = batch.numpy()
    centres = np.argwhere(loss & ~hidden)
    assert len(centres) >= 5
    # Corners and edges are among the checked pixels only by chance; check them all.
    for b, c, y, x in centres:
        values = sorted(
            original[b, c, y + dy, x + dx]
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if (dy, dx) != (0, 0)
            and (dy, dx) not in excluded
            and 0 <= y + dy < 12
            and 0 <= x + dx < 13
        )
        lower_median = values[(len(values) - 1) // 2]
        assert masked.inputs[b, c, y, x].item() == pytest.approx(lower_median, abs=0)


@pytest.mark.parametrize("blind", [None, CROSS])
@pytest.mark.parametrize("replacement", REPLACEMENTS)
def test_deterministic_and_global_rng_untouched(blind, replacement):
    masker = BlindSpotMasker(fraction=0.05, replacement=replacement, blind_mask=blind)
    batch = torch.randn(3, 2, 24, 24, dtype=torch.float64)
    before = batch.clone()
    state = torch.get_rng_state()
    first = _mask(masker, batch, 5)
    second = _mask(masker, batch, 5)
    other = _mask(masker, batch, 6)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(batch, before)
    assert first.inputs.dtype == torch.float64 and first.inputs.device == batch.device
    assert torch.equal(first.inputs, second.inputs)
    assert torch.equal(first.loss_mask, second.loss_mask)
    assert not torch.equal(first.loss_mask, other.loss_mask)
    # Planes are masked independently.
    assert not torch.equal(first.loss_mask[0, 0], first.loss_mask[0, 1])
    assert not torch.equal(first.loss_mask[0, 0], first.loss_mask[1, 0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("replacement", REPLACEMENTS)
def test_cuda_matches_cpu(replacement):
    masker = BlindSpotMasker(fraction=0.1, replacement=replacement, blind_mask=CROSS)
    batch = torch.randn(2, 1, 20, 20)
    cpu = _mask(masker, batch, 9)
    gpu = _mask(masker, batch.cuda(), 9)
    assert gpu.inputs.is_cuda and gpu.loss_mask.is_cuda
    assert torch.equal(gpu.loss_mask.cpu(), cpu.loss_mask)
    assert torch.equal(gpu.inputs.cpu(), cpu.inputs)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"fraction": 0.0}, "0.0"),
        ({"fraction": 0.7}, "0.7"),
        ({"window": 4}, "4"),
        ({"window": 1}, "1"),
        ({"replacement": "foo"}, "foo"),
        ({"blind_mask": np.ones((2, 3))}, "2x3"),
        ({"blind_mask": np.ones((1, 4))}, "1x4"),
        ({"blind_mask": np.ones((3, 3, 3))}, "3"),
        ({"blind_mask": np.ones((5, 5))}, "larger window"),
    ],
)
def test_bad_options_raise_user_error(options, fragment):
    with pytest.raises(UserError, match=fragment) as info:
        BlindSpotMasker(**options)
    assert "\n" not in str(info.value)


def test_plain_masks_are_accepted():
    # A blind mask with only the centre set (or nothing set) is plain N2V.
    for blind in (np.array([[1]]), np.zeros((3, 3)), np.pad([[1]], 1)):
        masker = BlindSpotMasker(blind_mask=blind)
        batch = _unique((1, 1, 16, 16))
        masked = _mask(masker, batch, 0)
        assert torch.equal(masked.inputs != batch, masked.loss_mask)


def test_volumes_are_masked_in_3d_with_the_requested_fraction() -> None:
    masker = BlindSpotMasker(fraction=0.05, window=3)
    batch = torch.arange(2 * 12 * 16 * 16, dtype=torch.float32).reshape(2, 1, 12, 16, 16)
    masked = masker(batch, torch.Generator().manual_seed(0))
    centres = masked.loss_mask.nonzero()
    assert masked.inputs.shape == batch.shape
    assert abs(len(centres) / batch.numel() - 0.05) < 0.02
    # Every centre took the value of a voxel of its 3x3x3 window other than itself: with
    # distinct values (arange) the source position can be read back from the value.
    for b, c, z, y, x in centres.tolist():
        value = int(masked.inputs[b, c, z, y, x])
        rest = value - b * 12 * 16 * 16
        sz, sy, sx = rest // 256, rest // 16 % 16, rest % 16
        assert (sz, sy, sx) != (z, y, x)
        assert max(abs(sz - z), abs(sy - y), abs(sx - x)) <= 1
    assert torch.equal(masked.inputs[~masked.loss_mask], batch[~masked.loss_mask])


def test_a_2d_blind_mask_hides_pixels_in_the_centre_plane_of_a_volume() -> None:
    line = np.array([[0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    masker = BlindSpotMasker(fraction=0.02, window=5, blind_mask=line)
    batch = torch.randn(1, 1, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    masked = masker(batch, torch.Generator().manual_seed(1))
    changed = masked.inputs != batch
    for _, _, z, y, x in masked.loss_mask.nonzero().tolist():
        assert changed[0, 0, z, y, max(0, x - 2): x + 3].sum() >= 3
    # Nothing outside the centres' planes and rows is touched.
    rows = {(z, y) for _, _, z, y, _ in masked.loss_mask.nonzero().tolist()}
    touched = {(z, y) for _, _, z, y, _ in changed.nonzero().tolist()}
    assert touched <= rows
