import json

import numpy as np
import pytest
import torch

from bmz_cosdd.data.normalisation import (
    NormStats,
    compute_stats,
    denormalise,
    denormalise_tensor,
    normalise,
    normalise_tensor,
)
from bmz_cosdd.errors import UserError


def _images(seed=0):
    rng = np.random.default_rng(seed)
    # Large offset and different sizes: float32 accumulation would lose digits here.
    sizes = [(40, 50), (33, 61), (64, 64)]
    return [
        (1250.0 + rng.gamma(2.0, 30.0, size=(2, *s)) * np.array([1.0, 3.0])[:, None, None]).astype(np.float32)
        for s in sizes
    ]


def test_stats_equal_numpy_float64():
    images = _images()
    stats = compute_stats(images)
    assert stats.n_channels == 2
    for c in range(2):
        values = np.concatenate([im[c].ravel().astype(np.float64) for im in images])
        assert stats.mean[c] == pytest.approx(values.mean(), rel=1e-13)
        assert stats.std[c] == pytest.approx(values.std(), rel=1e-12)
    assert stats.clip_low is None and stats.clip_high is None


def test_stats_with_clipping():
    images = _images(1)
    stats = compute_stats(images, clip_percentiles=(1.0, 99.5))
    assert stats.clip_percentiles == (1.0, 99.5)
    for c in range(2):
        values = np.concatenate([im[c].ravel().astype(np.float64) for im in images])
        low, high = np.percentile(values, [1.0, 99.5])
        assert stats.clip_low[c] == pytest.approx(low, rel=1e-14)
        assert stats.clip_high[c] == pytest.approx(high, rel=1e-14)
        clipped = np.clip(values, low, high)
        assert stats.mean[c] == pytest.approx(clipped.mean(), rel=1e-13)
        assert stats.std[c] == pytest.approx(clipped.std(), rel=1e-12)
    x = normalise(images[0], stats)
    lo = (np.array(stats.clip_low) - stats.mean) / stats.std
    hi = (np.array(stats.clip_high) - stats.mean) / stats.std
    assert np.all(x.min(axis=(1, 2)) >= lo.astype(np.float32) - 1e-6)
    assert np.all(x.max(axis=(1, 2)) <= hi.astype(np.float32) + 1e-6)


@pytest.mark.parametrize("percentiles", [(50, 50), (-1, 99), (1, 101), (99, 1)])
def test_bad_percentiles(percentiles):
    with pytest.raises(UserError, match="0 <= low < high <= 100"):
        compute_stats(_images(), clip_percentiles=percentiles)


def test_stats_errors():
    with pytest.raises(UserError, match="zero standard deviation"):
        compute_stats([np.ones((1, 4, 4)), np.ones((1, 5, 5))])
    with pytest.raises(UserError, match="channel count"):
        compute_stats([np.zeros((1, 4, 4)), np.zeros((2, 4, 4))])
    with pytest.raises(UserError):
        compute_stats([])


def test_normalise_round_trip_numpy_and_torch():
    images = _images()
    stats = compute_stats(images)
    x = images[1]
    z = normalise(x, stats)
    assert z.dtype == np.float32
    assert abs(float(np.mean(np.concatenate([normalise(im, stats)[0].ravel() for im in images])))) < 1e-5
    np.testing.assert_allclose(denormalise(z, stats), x, rtol=1e-6)
    batch = np.stack([x, x])  # (B, C, Y, X)
    zt = normalise_tensor(torch.from_numpy(batch), stats)
    assert zt.dtype == torch.float32
    np.testing.assert_array_equal(zt.numpy()[0], z)
    back = denormalise_tensor(zt, stats)
    assert back.dtype == torch.float32
    np.testing.assert_array_equal(back.numpy()[1], denormalise(z, stats))


def test_normalise_channel_mismatch():
    stats = NormStats(mean=[0.0], std=[1.0])
    with pytest.raises(UserError, match="3 channel"):
        normalise(np.zeros((3, 4, 4)), stats)


def test_save_load_round_trip(tmp_path):
    stats = compute_stats(_images(), clip_percentiles=(0.5, 99.5))
    path = tmp_path / "run" / "norm.json"
    stats.save(path)
    loaded = NormStats.load(path)
    assert loaded == stats  # float64 values survive JSON exactly
    assert json.loads(path.read_text())["clip_percentiles"] == [0.5, 99.5]
    assert NormStats.from_dict(stats.to_dict()) == stats


def test_load_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        NormStats.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="bad.json"):
        NormStats.load(tmp_path / "bad.json")
    (tmp_path / "zero.json").write_text(json.dumps({"mean": [0.0], "std": [0.0]}))
    with pytest.raises(UserError, match="zero.json"):
        NormStats.load(tmp_path / "zero.json")
    (tmp_path / "len.json").write_text(json.dumps({"mean": [0.0, 1.0], "std": [1.0]}))
    with pytest.raises(UserError, match="len.json"):
        NormStats.load(tmp_path / "len.json")
