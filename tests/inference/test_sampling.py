import numpy as np
import torch

from bmz_cosdd.inference.sampling import sample_reduce


def test_chunked_reduction_equals_reduction_of_all_samples():
    gen = torch.Generator().manual_seed(0)
    all_samples = torch.randn(23, 2, 1, 5, 6, generator=gen) * 3 + 7
    cursor = {"i": 0}

    def draw(k):
        out = all_samples[cursor["i"] : cursor["i"] + k]
        cursor["i"] += k
        return out

    out = sample_reduce(draw, 23, batch=5, keep_samples=True)
    ref = all_samples.double()
    np.testing.assert_allclose(out["mmse"].numpy(), ref.mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(out["std"].numpy(), ref.std(0).numpy(), rtol=1e-5)
    assert torch.equal(out["samples"], all_samples)
    assert cursor["i"] == 23


def test_single_sample_has_zero_std():
    out = sample_reduce(lambda k: torch.ones(k, 1, 1, 2, 2), 1, batch=10)
    assert torch.all(out["std"] == 0) and torch.all(out["mmse"] == 1)
