"""Out-of-core prediction: Zarr / OME-Zarr / TIFF block by block equals in-memory prediction, and resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from bmz_cosdd.data.synthetic import make_dataset
from bmz_cosdd.inference.blockwise import block_grid, predict_out_of_core
from bmz_cosdd.inference.predictor import load_run, predict_image
from bmz_cosdd.methods.base import PredictOptions
from helpers import assert_one_line_error, run_cli, tiny_blind_spot_config, yx_grid

TILE = 96


@pytest.fixture(scope="module")
def n2v_run(tmp_path_factory, noisy_stack) -> Path:
    from bmz_cosdd.training.session import train

    run = tmp_path_factory.mktemp("runs") / "n2v"
    train(tiny_blind_spot_config("n2v", noisy_stack), run, progress=False)
    return run


def _image(height: int, width: int, seed: int = 9) -> np.ndarray:
    return make_dataset("mixed", "row_correlated", n=1, shape=(height, width), seed=seed).noisy[0]


def _zarr(path: Path, image: np.ndarray, chunks: tuple[int, ...]) -> Path:
    z = zarr.create_array(str(path), shape=image.shape, chunks=chunks, dtype="float32")
    z[:] = image
    return path


def _block(run: Path) -> int:
    trained = load_run(run)
    step, halo = yx_grid(trained)
    halo = -(-halo // step) * step
    return (TILE - 2 * halo) // step * step


def test_block_grid_covers_the_plane_once():
    grid = block_grid((70, 45), 32)
    covered = np.zeros((70, 45), int)
    for b in grid:
        covered[b.start[0] : b.start[0] + b.size[0], b.start[1] : b.start[1] + b.size[1]] += 1
    assert (covered == 1).all() and [b.index for b in grid] == list(range(6))


def test_deterministic_network_equals_in_memory_for_any_size(tmp_path, n2v_run):
    image = _image(150, 133)  # larger than the block along both axes, not a multiple of it
    source = _zarr(tmp_path / "in.zarr", image, (32, 32))
    trained = load_run(n2v_run)
    assert _block(n2v_run) < 133
    [path] = predict_out_of_core(trained, source, "YX", tmp_path / "out", tile=TILE)
    assert path.name == "in_denoised.zarr" and not list((tmp_path / "out").glob("*.partial"))
    expected = predict_image(trained, image[None], tile=TILE)["denoised"][0]
    np.testing.assert_allclose(zarr.open(str(path))[:], expected, rtol=0, atol=1e-5)
    assert not (tmp_path / "out" / ".in.blockwise.json").exists()


def test_sampling_model_equals_in_memory_on_the_block_grid(tmp_path, trained_run):
    block = _block(trained_run)
    image = _image(2 * block, 3 * block)
    source = _zarr(tmp_path / "in.zarr", image, (block, block))
    trained = load_run(trained_run)
    options = PredictOptions(samples=3)
    paths = predict_out_of_core(trained, source, "YX", tmp_path / "out", options, tile=TILE, seed=4)
    expected = predict_image(trained, image[None], options, tile=TILE, seed=4)
    assert sorted(p.name for p in paths) == ["in_mmse.zarr", "in_std.zarr"]
    for path in paths:
        name = path.name[3:-5]
        np.testing.assert_allclose(zarr.open(str(path))[:], expected[name][0], rtol=0, atol=1e-5)
        assert zarr.open(str(path)).chunks == (block, block)


def test_interrupted_prediction_resumes_to_the_same_result(tmp_path, trained_run):
    image = _image(170, 150)
    source = _zarr(tmp_path / "in.zarr", image, (40, 40))
    trained = load_run(trained_run)
    options = PredictOptions(samples=2)
    [*full] = predict_out_of_core(trained, source, "YX", tmp_path / "full", options, tile=TILE)

    def stop_after_three(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_out_of_core(trained, source, "YX", tmp_path / "part", options, tile=TILE, on_block=stop_after_three)
    record = json.loads((tmp_path / "part" / ".in.blockwise.json").read_text())
    assert record["done"] == 3 and (tmp_path / "part" / "in_mmse.zarr.partial").is_dir()
    assert not (tmp_path / "part" / "in_mmse.zarr").exists()  # nothing looks finished
    seen = []
    resumed = predict_out_of_core(trained, source, "YX", tmp_path / "part", options, tile=TILE,
                                  on_block=lambda d, t: seen.append(d))
    assert seen[0] == 3 and seen[-1] == len(block_grid((170, 150), _block(trained_run)))
    for a, b in zip(sorted(full), sorted(resumed)):
        np.testing.assert_array_equal(zarr.open(str(a))[:], zarr.open(str(b))[:])


@pytest.mark.slow
def test_killed_process_restarts_where_it_stopped(tmp_path, n2v_run):
    image = _image(1024, 1024)
    source = _zarr(tmp_path / "in.zarr", image, (128, 128))
    out = tmp_path / "out"
    args = [sys.executable, "-m", "bmz_cosdd", "predict", str(n2v_run), str(source), "--axes", "YX", "--tile", "128",
            "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record = out / ".in.blockwise.json"
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if record.is_file():
            try:
                done = json.loads(record.read_text())["done"]
            except ValueError:
                done = 0
            if done >= 5:
                break
        time.sleep(0.02)
    assert proc.poll() is None, "the prediction finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = json.loads(record.read_text())["done"]
    assert 5 <= before < len(block_grid((1024, 1024), _block_for_tile(n2v_run, 128)))
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    restarted = zarr.open(str(out / "in_denoised.zarr"))[:]
    expected = predict_image(load_run(n2v_run), image[None], tile=128)["denoised"][0]
    np.testing.assert_allclose(restarted, expected, rtol=0, atol=1e-5)
    assert not record.exists()


def _block_for_tile(run: Path, tile: int) -> int:
    trained = load_run(run)
    step, halo = yx_grid(trained)
    halo = -(-halo // step) * step
    return (tile - 2 * halo) // step * step


def test_ome_zarr_stack_in_ome_zarr_out(tmp_path, n2v_run):
    stack = np.stack([_image(100, 90, seed=s) for s in (1, 2)])
    group = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w")
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "t", "type": "time"}, {"name": "y", "type": "space", "unit": "micrometer"},
                 {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 0.2, 0.2]}]}]}]}
    array = group.create_array("0", shape=stack.shape, chunks=(1, 50, 50), dtype="float32")
    array[:] = stack


    trained = load_run(n2v_run)
    [path] = predict_out_of_core(trained, tmp_path / "img.ome.zarr", None, tmp_path / "out", tile=TILE)
    assert path.name == "img_denoised.ome.zarr"
    result = zarr.open_group(str(path), mode="r")
    meta = result.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in meta["axes"]] == ["t", "y", "x"]
    assert meta["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 0.2, 0.2]
    for t in range(2):
        expected = predict_image(trained, stack[t][None], tile=TILE)["denoised"][0]
        np.testing.assert_allclose(result["0"][t], expected, rtol=0, atol=1e-5)


def test_large_tiff_through_the_cli(tmp_path, n2v_run, capsys):
    image = np.stack([_image(120, 100, seed=3)] * 2, axis=-1)  # YXC, channel last
    tifffile.imwrite(tmp_path / "big.tif", image[..., :1].astype(np.float32))
    code, out, err = run_cli(["predict", n2v_run, tmp_path / "big.tif", "--axes", "YXC", "--out-of-core",
                              "--tile", TILE, "--out", tmp_path / "out", "--quiet"], capsys)
    assert code == 0, err
    written = tmp_path / "out" / "big_denoised.tif"
    assert out.strip() == str(written)
    expected = predict_image(load_run(n2v_run), image[..., 0][None], tile=TILE)["denoised"][0]
    np.testing.assert_allclose(tifffile.imread(written)[..., 0], expected, rtol=0, atol=1e-5)


def test_bad_inputs_are_one_line(tmp_path, n2v_run, capsys):
    image = _image(300, 300)
    whole = _zarr(tmp_path / "whole.zarr", image, (300, 300))
    code, out, err = run_cli(["predict", n2v_run, whole, "--axes", "YX", "--tile", "64", "--out", tmp_path / "o"],
                             capsys)
    assert_one_line_error(code, out, err, "rechunk")
    source = _zarr(tmp_path / "in.zarr", image, (32, 32))
    code, out, err = run_cli(["predict", n2v_run, source, "--axes", "SYX", "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, out, err, "axes")
    code, out, err = run_cli(["predict", n2v_run, source, "--axes", "YX", "--save-samples", "--out", tmp_path / "o"],
                             capsys)
    assert_one_line_error(code, out, err, "out-of-core")

    trained = load_run(n2v_run)

    def stop(done: int, total: int) -> None:
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_out_of_core(trained, source, "YX", tmp_path / "p", tile=TILE, on_block=stop)
    code, out, err = run_cli(["predict", n2v_run, source, "--axes", "YX", "--tile", "128", "--out", tmp_path / "p"],
                             capsys)
    assert_one_line_error(code, out, err, "other settings (block, tile)")
