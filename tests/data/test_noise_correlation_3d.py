"""The noise-correlation estimator on volumes: the correlation along z (across planes) next to x and y."""

import numpy as np
import pytest

from bmz_cosdd.config import DataConfig
from bmz_cosdd.data.noise_correlation import MIN_PLANES, estimate_noise_correlation, examined_volumes
from bmz_cosdd.data.synthetic import make_clean
from bmz_cosdd.methods.registry import get_method

SHAPE = (24, 64, 64)  # Z, Y, X


def _ar1(rng: np.random.Generator, shape: tuple[int, ...], rho: float, axis: int) -> np.ndarray:
    """Unit-variance Gaussian AR(1) noise along ``axis``: correlation rho ** lag along it, independent across it."""
    white = np.moveaxis(rng.standard_normal(shape), axis, 0)
    out = np.empty_like(white)
    out[0] = white[0]
    for i in range(1, len(white)):
        out[i] = rho * out[i - 1] + np.sqrt(1 - rho**2) * white[i]
    return np.moveaxis(out, 0, axis)


def _volume(noise: np.ndarray) -> np.ndarray:
    """(1, Z, Y, X) volume in camera-like units: smooth 3-D blobs plus ``noise`` at 10 % of the signal range."""
    clean = make_clean("blobs", 1, SHAPE, seed=3)[0]
    return (100 + 1000 * (clean + 0.1 * noise))[None]


def test_correlation_only_along_z_is_recovered_and_chosen():
    rng = np.random.default_rng(0)
    found = estimate_noise_correlation([_volume(_ar1(rng, SHAPE, 0.5, axis=0))])
    assert found.direction == "z", found.describe()
    assert found.axes == ("x", "y", "z")
    assert found.correlation_z[0] == pytest.approx(0.5, abs=0.05)
    assert found.correlation_z[1] == pytest.approx(0.25, abs=0.05)
    assert max(abs(v) for v in found.correlation_x[:3] + found.correlation_y[:3]) < 0.05
    assert found.length_z >= 1 and found.length_x == found.length_y == 0
    assert len(found.correlation_z) == min(found.max_lag, SHAPE[0] - 1)
    assert found.describe().startswith("noise correlated along z (across planes)")
    assert "planes" in found.describe_axis("z")
    as_dict = found.to_dict()
    assert as_dict["direction"] == "z" and len(as_dict["correlation_z"]) == len(found.correlation_z)
    assert as_dict["correlation_length_px"]["z"] == found.length_z


def test_known_kernel_along_z():
    # A moving sum over 3 planes of white noise: correlation 2/3 at lag 1, 1/3 at lag 2, 0 beyond.
    rng = np.random.default_rng(1)
    white = rng.standard_normal((SHAPE[0] + 2, *SHAPE[1:]))
    noise = (white[:-2] + white[1:-1] + white[2:]) / np.sqrt(3)
    found = estimate_noise_correlation([_volume(noise)], max_lag=6)
    np.testing.assert_allclose(found.correlation_z[:3], [2 / 3, 1 / 3, 0.0], atol=0.05)
    assert found.direction == "z" and found.length_z == 2


def test_correlation_along_x_in_a_volume_is_not_taken_for_z():
    rng = np.random.default_rng(2)
    found = estimate_noise_correlation([_volume(_ar1(rng, SHAPE, 0.5, axis=2))])
    assert found.direction == "x", found.describe()
    assert found.correlation_x[0] == pytest.approx(0.5, abs=0.05)
    assert max(abs(v) for v in found.correlation_z[:3]) < 0.05
    assert found.cross_correlated is None


def test_z_is_measured_across_the_in_plane_axis_the_noise_is_independent_along():
    # Half the variance in stripes along y (AR 0.8), half correlated along z (AR 0.5): along z the total noise has
    # correlation 0.5 * 0.5 ** lag. The prediction must run along x, where both parts are independent: along y it
    # would cancel part of the stripes and overstate the z share (about 0.44 at lag 1 here).
    noise = (_ar1(np.random.default_rng(8), SHAPE, 0.8, axis=1) + _ar1(np.random.default_rng(9), SHAPE, 0.5, axis=0))
    found = estimate_noise_correlation([_volume(noise / np.sqrt(2))])
    assert found.direction == "y" and found.cross_correlated == "z", found.describe()
    np.testing.assert_allclose(found.correlation_z[:3], [0.25, 0.125, 0.0625], atol=0.03)
    np.testing.assert_allclose(found.correlation_y[:3], [0.4, 0.32, 0.256], atol=0.03)
    assert max(abs(v) for v in found.correlation_x[:3]) < 0.03
    assert found.in_plane().direction == "y" and found.in_plane().cross_correlated is None


def test_white_noise_volume_and_in_plane_view():
    rng = np.random.default_rng(5)
    white = estimate_noise_correlation([rng.normal(500, 10, size=(1, *SHAPE))])
    assert white.direction == "none" and white.length_z == 0
    assert max(abs(v) for v in white.correlation_z) < 0.03
    assert "along z" in white.describe()

    along_z = estimate_noise_correlation([_volume(_ar1(rng, SHAPE, 0.5, axis=0))])
    flat = along_z.in_plane()
    assert flat.direction == "none" and flat.correlation_z is None and flat.axes == ("x", "y")
    assert flat.correlation_x == along_z.correlation_x


def test_two_dimensional_input_has_no_z():
    rng = np.random.default_rng(6)
    images = [rng.normal(size=(1, 64, 64)) for _ in range(2)]
    found = estimate_noise_correlation(images)
    assert found.correlation_z is None and found.length_z is None and found.axes == ("x", "y")
    assert "z" not in found.describe() and "correlation_z" not in found.to_dict()
    assert set(found.to_dict()["correlation_length_px"]) == {"x", "y"}
    with pytest.raises(ValueError, match="along z"):
        found.correlation("z")
    # Volumes thinner than MIN_PLANES count as their planes only.
    thin = estimate_noise_correlation([rng.normal(size=(1, MIN_PLANES - 1, 64, 64))])
    assert thin.correlation_z is None


def test_examined_volumes_are_central_contiguous_blocks():
    volume = np.arange(40 * 300 * 20, dtype=np.float32).reshape(1, 40, 300, 20)
    (block,) = examined_volumes([volume, np.zeros((1, 64, 64)), np.zeros((1, 3, 64, 64))])
    assert block.shape == (1, 32, 256, 20) and block.dtype == np.float64
    np.testing.assert_array_equal(block, volume[:, 4:36, 22:278, :])


def test_cosdd_direction_auto_answers_z_on_volumes():
    rng = np.random.default_rng(7)
    images = [_volume(_ar1(rng, SHAPE, 0.5, axis=0))]
    images = [(v - v.mean()) / v.std() for v in images]
    method = get_method("cosdd")
    config = method.config_from_dict({"preset": "tiny"})
    resolved, notes = method.resolve_config(config, DataConfig(axes="ZYX", spatial_dims=3), images, None)
    assert resolved.direction == "z"
    assert notes[0].startswith("noise direction (auto): z. noise correlated along z")
    # the noise decoder's field and context dropout follow the correlation measured along z
    assert any(n.startswith("noise decoder field (auto):") and "along z" in n for n in notes), notes
    assert resolved.ar_layers < 8 and resolved.context_dropout == 0.0  # AR(1) 0.5 along z: strongly correlated
    method.build(resolved, 1, spatial_dims=3)


def test_structn2v_auto_mask_leaves_z_correlation_to_cosdd():
    """A blind mask lies within a plane: noise correlated only across planes gets no mask, and the reason says so."""
    from bmz_cosdd.methods.n2v.struct_mask import estimate_struct_mask

    rng = np.random.default_rng(0)
    choice = estimate_struct_mask([_volume(_ar1(rng, SHAPE, 0.5, axis=0))], crop_size=32)
    assert choice.spec == "none", choice.reason
    assert "across planes" in choice.reason and "--direction z" in choice.reason
    config = get_method("structn2v").config_from_dict({"struct_mask": "auto", "z_pool": "1,1", "z_kernel": "3,3,3"})
    data = DataConfig(paths=["v.tif"], axes="ZYX", spatial_dims=3, crop_size=32, crop_depth=8)
    resolved, notes = get_method("structn2v").resolve_config(config, data, [_volume(_ar1(rng, SHAPE, 0.5, 0))], None)
    assert resolved.struct_mask is None and any("struct mask (auto): none" in n for n in notes)
