"""COSDD on real images, as a user runs it: it must beat its noisy input, and say so when it does not."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from bmz_cosdd.data.io import write_tiff
from bmz_cosdd.data.real_images import real_tiles
from bmz_cosdd.data.synthetic import row_correlated
from bmz_cosdd.analysis.metrics import psnr

LEVEL = 0.3  # a dim FFHQ-Stripe case: 20.5 dB noisy


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "bmz_cosdd", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_tiny_cosdd_beats_its_noisy_input_on_real_tiles(tmp_path):
    rng = np.random.default_rng(0)
    train, test = LEVEL * real_tiles("train", 64, 4), LEVEL * real_tiles("test", 64, 4)
    write_tiff(tmp_path / "train.tif", row_correlated(train, rng).astype(np.float32), "SYX")
    noisy = row_correlated(test, rng).astype(np.float32)
    write_tiff(tmp_path / "test.tif", noisy, "SYX")
    done = _cli("train", "cosdd", "train.tif", "--axes", "SYX", "--preset", "tiny", "--crop-size", 32,
                "--batch-size", 8, "--max-steps", 200, "--out", "run", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "quality (no ground truth" in done.stderr and "WARNING" not in done.stderr, done.stderr
    quality = json.loads((tmp_path / "run" / "quality.json").read_text())
    assert not quality["flagged"] and quality["latent"]["kl"] > 0.01
    done = _cli("predict", "run", "test.tif", "--axes", "SYX", "--samples", 20, "--out", "pred", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "residual check" in done.stderr
    denoised = tifffile.imread(tmp_path / "pred" / "test_mmse.tif")
    before = np.mean([psnr(n, c, LEVEL) for n, c in zip(noisy, test)])
    after = np.mean([psnr(d, c, LEVEL) for d, c in zip(denoised, test)])
    assert after > before + 2.0, (before, after)
