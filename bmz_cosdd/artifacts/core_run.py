"""Running bioimageio.core on a package as its own test does: RNG pinned, one whole sample.

bioimageio.core's reproducibility test seeds Python's, NumPy's and torch's generators with 0
and predicts the test input whole (no halo padding, no output cropping). The package's test
outputs are made (:mod:`bmz_cosdd.export.core_outputs`) and its consumers checked
(:mod:`bmz_cosdd.zoo.consumers`) the same way, so both reproduce core's numbers.

Examples
--------
Inside :func:`core_test_seeds` every draw is core's (``predict_whole(descr, sample,
"torchscript", ["cpu"])`` samples as core's test does); the caller's generators go on
where they were:

>>> draws = []
>>> for _ in range(2):
...     with core_test_seeds():
...         draws.append(np.random.rand())
>>> draws[0] == draws[1] == np.random.RandomState(0).rand()
True
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np


@contextmanager
def core_test_seeds() -> Iterator[None]:
    """Seed like core's test (0 everywhere) and give the caller its RNG states back.

    Python's, NumPy's and torch's (CPU) generators are seeded with 0 while inside; their
    states from before are restored on leaving.
    """
    import torch

    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()
    py_state = random.getstate()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    try:
        yield
    finally:
        torch.random.set_rng_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


def predict_whole(descr: Any, sample: Any, weight_format: str, devices: list[str] | None) -> Any:
    """bioimageio.core's test procedure for one sample: pre-process, predict the whole sample
    (no halo padding, no cropping), post-process.

    Parameters
    ----------
    descr
        The package's model description.
    sample
        A ``bioimageio.core.Sample`` of the description's inputs.
    weight_format
        The weights to run, e.g. ``"torchscript"``.
    devices
        Devices for core's pipeline, or None (core's choice).

    Returns
    -------
    bioimageio.core.Sample
        Core's output sample (post-processed).
    """
    from bioimageio.core import create_prediction_pipeline

    with create_prediction_pipeline(bioimageio_model=descr, weight_format=weight_format, devices=devices) as pp:
        pp.apply_preprocessing(sample)
        result = pp.predict_sample_without_blocking(
            sample,
            skip_preprocessing=True,
            skip_postprocessing=True,
            skip_input_padding=True,
            skip_output_cropping=True,
        )
        pp.apply_postprocessing(result)
    return result

