"""The package's test outputs: its test input run through bioimageio.core as core's own test runs it.

The TorchScript weights of the draft description predict the test input inside
bioimageio.core's pipeline (pre-processing, the whole sample without padding or cropping,
post-processing) with the generators seeded as core's test seeds them, so
``bioimageio.core.test_model`` reproduces the outputs at its default tolerance.

Examples
--------
Not run as a doctest: ``draft`` is the description of a staged package (see
:mod:`bmz_cosdd.export.package_zip`), and making it runs bioimageio.core.

>>> arrays = core_test_outputs(draft)   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bmz_cosdd.artifacts.core_run import core_test_seeds, predict_whole


def core_test_outputs(descr: Any) -> dict[str, np.ndarray]:
    """Run the test input through core's pipeline with the torchscript weights.

    The steps mirror bioimageio.core's reproducibility test: preprocessing, prediction
    without padding or cropping, postprocessing.

    Parameters
    ----------
    descr
        The draft description (without test outputs) of the staged package.

    Returns
    -------
    dict
        Output id -> float32 array in the output's axes (raw intensities).

    Raises
    ------
    ValueError
        One line if an output is missing, has other axes, or is not finite.
    """
    from bioimageio.core.digest_spec import get_test_input_sample

    sample = get_test_input_sample(descr)
    with core_test_seeds():
        result = predict_whole(descr, sample, "torchscript", ["cpu"])

    arrays = {}
    for out in descr.outputs:
        tensor = result.members.get(out.id)
        if tensor is None:
            raise ValueError(f"the torchscript module gave no tensor for output '{out.id}'")
        dims = [str(a.id) for a in out.axes]
        if [str(d) for d in tensor.dims] != dims:
            raise ValueError(f"output '{out.id}' has axes {list(tensor.dims)}, expected {dims}")
        arr = np.asarray(tensor.data.values, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise ValueError(f"output '{out.id}' of the test input contains NaN or infinite values")
        arrays[str(out.id)] = arr
    return arrays
