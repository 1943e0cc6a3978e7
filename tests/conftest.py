"""Shared fixtures: small synthetic data on disk and a tiny trained COSDD run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bmz_cosdd.data.io import write_tiff
from bmz_cosdd.data.synthetic import make_dataset
from helpers import tiny_config

if os.environ.get("PYTEST_XDIST_WORKER"):
    # The README's test command runs two pytest-xdist workers on 2 cores: each worker, and the CLI
    # subprocesses its tests start, then use one thread (two threads each would oversubscribe the cores).
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def noisy_stack(tmp_path_factory) -> Path:
    """Four 48x48 images with row-correlated noise, saved as one SYX TIFF."""
    folder = tmp_path_factory.mktemp("data")
    data = make_dataset("blobs", "row_correlated", n=4, shape=(48, 48), seed=3)
    path = folder / "noisy.tif"
    write_tiff(path, data.noisy, "SYX")
    np.save(folder / "clean.npy", data.clean.astype(np.float32))
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, noisy_stack) -> Path:
    """A tiny COSDD run (6 steps) with a direct denoiser."""
    from bmz_cosdd.training.session import train

    run = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_config(noisy_stack), run, progress=False)
    return run


@pytest.fixture(scope="session")
def hypha_server(tmp_path_factory):
    """A real Hypha server (artifact manager + moto S3) on 127.0.0.1, once per session."""
    import hypha_server as server_module

    server, processes = server_module.start(tmp_path_factory.mktemp("hypha"))
    try:
        yield server
    finally:
        server_module.stop(processes)
