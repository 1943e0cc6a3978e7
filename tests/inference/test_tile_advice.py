"""Practical tiling: the suggested --tile keeps at least half of each tile's side, a wasteful tile is warned
about with the number of tiles it makes, and long tilings show progress."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from bmz_cosdd.data.synthetic import make_dataset
from bmz_cosdd.errors import UserError
from bmz_cosdd.inference.blockwise import predict_out_of_core
from bmz_cosdd.inference.predictor import load_run, predict_image
from bmz_cosdd.inference.tiling import (
    KEPT_SIDE,
    TileProgress,
    effective_halo,
    smallest_tile,
    suggested_tile,
    tile_layout,
    tile_warning,
)
from helpers import assert_one_line_error, run_cli, tiny_blind_spot_config, yx_grid


@pytest.fixture(scope="module")
def n2v_run(tmp_path_factory, noisy_stack) -> Path:
    from bmz_cosdd.training.session import train

    run = tmp_path_factory.mktemp("runs") / "n2v"
    train(tiny_blind_spot_config("n2v", noisy_stack), run, progress=False)
    return run


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Path:
    """Two 64 x 64 images (SYX)."""
    path = tmp_path_factory.mktemp("tiles") / "two.tif"
    images = make_dataset("blobs", "row_correlated", n=2, shape=(64, 64), seed=5).noisy.astype(np.float32)
    tifffile.imwrite(path, images)
    return path


def _model(run: Path) -> tuple[int, int]:
    trained = load_run(run)
    return yx_grid(trained)


def _keeps_half(tile: int, halo: int, step: int) -> bool:
    core = (tile - 2 * effective_halo(halo, step)) // step * step
    return core >= step and core >= KEPT_SIDE * tile


def test_the_rule_for_a_depth_3_unet():
    # halo 58 rounded up to the size step 8: 64 px each side
    assert smallest_tile(58, 8) == 136 and suggested_tile(58, 8) == 256
    line = tile_warning((256, 256), 136, 58, 8)
    assert line is not None and "1024 tiles" in line and "--tile 256" in line and "\n" not in line
    assert tile_warning((256, 256), 256, 58, 8) is None  # keeps exactly half of each side
    assert tile_warning((256, 256), 248, 58, 8) is not None
    assert tile_warning((140, 140), 136, 58, 8) is not None  # 18 x 18 tiles of 8 px for a small image
    assert tile_warning((100, 100), 136, 58, 8) is None  # fits in one tile (104 px): one piece, no halo
    assert tile_warning((8, 8), 136, 58, 8) is None  # one tile: nothing to choose
    for halo, step in [(0, 4), (26, 4), (29, 4), (58, 8), (122, 16), (32, 128)]:
        best = suggested_tile(halo, step)
        assert best % step == 0 and _keeps_half(best, halo, step)
        assert not _keeps_half(best - step, halo, step) or best - step < smallest_tile(halo, step)


def test_too_small_tile_is_one_line_suggesting_a_tile_that_keeps_half(n2v_run, stack, tmp_path, capsys):
    step, halo = _model(n2v_run)
    code, out, err = run_cli(["predict", n2v_run, stack, "--axes", "SYX", "--tile", smallest_tile(halo, step) - 1,
                              "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, out, err, "too small")
    suggested = int(re.search(r"use --tile (\d+)", err).group(1))
    assert suggested == suggested_tile(halo, step) and _keeps_half(suggested, halo, step)
    assert not _keeps_half(suggested - step, halo, step)
    # the suggested tile predicts without a warning
    code, out, err = run_cli(["predict", n2v_run, stack, "--axes", "SYX", "--tile", suggested, "--out",
                              tmp_path / "o"], capsys)
    assert code == 0, err
    assert "warning: --tile" not in err


def test_wasteful_tile_is_warned_once_with_the_tile_count(n2v_run, stack, tmp_path, capsys):
    step, halo = _model(n2v_run)
    tile = smallest_tile(halo, step)  # keeps one size step of each tile (and is under the 64 px images)
    count = tile_layout(64, tile, effective_halo(halo, step), step)[1] ** 2
    code, out, err = run_cli(["predict", n2v_run, stack, "--axes", "SYX", "--tile", tile, "--out", tmp_path / "o"],
                             capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, err  # two images of the same size: said once
    assert f"{count} tiles for this 64 x 64 image" in warnings[0] and count >= 16
    assert f"--tile {suggested_tile(halo, step)}" in warnings[0]
    assert (tmp_path / "o" / "two_denoised.tif").is_file()


def test_out_of_core_states_the_same_minimum_and_warning(n2v_run, tmp_path):
    step, halo = _model(n2v_run)
    trained = load_run(n2v_run)
    image = make_dataset("blobs", "row_correlated", n=1, shape=(96, 96), seed=2).noisy[0].astype(np.float32)
    tifffile.imwrite(tmp_path / "big.tif", image)
    with pytest.raises(UserError, match=f"use --tile {suggested_tile(halo, step)} or more"):
        predict_out_of_core(trained, tmp_path / "big.tif", "YX", tmp_path / "o", tile=smallest_tile(halo, step) - 1)
    said = []
    predict_out_of_core(trained, tmp_path / "big.tif", "YX", tmp_path / "o", tile=smallest_tile(halo, step) + step,
                        say=said.append)
    assert len(said) == 1 and "tiles for this 96 x 96 image" in said[0]


def test_tile_progress_is_a_bar_for_many_tiles_only(n2v_run):
    from rich.console import Console

    step, halo = _model(n2v_run)
    trained = load_run(n2v_run)
    image = make_dataset("blobs", "row_correlated", n=1, shape=(96, 96), seed=2).noisy[:1].astype(np.float32)
    calls = []
    predict_image(trained, image, tile=smallest_tile(halo, step) + step, on_tile=lambda d, n: calls.append((d, n)))
    total = calls[-1][1]
    assert calls == [(i, total) for i in range(1, total + 1)] and total >= 8

    screen = io.StringIO()
    with TileProgress(console=Console(file=screen, force_terminal=True, width=80)) as bar:
        bar(1, 3)
        assert screen.getvalue() == ""  # a few tiles: no bar
        for done in range(1, total + 1):
            bar(done, total)
    assert "tiles" in screen.getvalue() and f"{total}/{total}" in screen.getvalue()
    silent = io.StringIO()
    with TileProgress(enabled=False, console=Console(file=silent, force_terminal=True)) as bar:
        bar(1, 100)
    assert silent.getvalue() == ""
