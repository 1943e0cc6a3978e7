import pytest
import torch

from bmz_cosdd.nn.posterior import OUTPUT_WRAPPERS, PosteriorSampler
from bmz_cosdd.methods.cosdd.model import COSDDModel
from bmz_cosdd.methods.registry import get_method


@pytest.fixture(scope="module")
def model() -> COSDDModel:
    method = get_method("cosdd")
    torch.manual_seed(0)
    cfg = method.config_from_dict({"preset": "tiny", "direction": "x", "n_levels": 3, "latent_channels": [4],
                                   "features": 8, "ar_layers": 2, "ar_hidden": 4, "signal_hidden": 8})
    return method.build(cfg, 1).eval()


def _sampler(model, **kw):
    return PosteriorSampler(model.vae, model.signal_decoder, **kw).eval()


def test_result_does_not_depend_on_sample_batch(model):
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        a = _sampler(model, n_samples=7, sample_batch=7, seed=3, keep_samples=True).reduce(x)
        b = _sampler(model, n_samples=7, sample_batch=2, seed=3, keep_samples=True).reduce(x)
    torch.testing.assert_close(a[2], b[2], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a[1], b[1], rtol=1e-5, atol=1e-6)


def test_mean_and_std_match_the_samples(model):
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        mmse, std, samples = _sampler(model, n_samples=9, sample_batch=4, keep_samples=True).reduce(x)
    assert samples.shape == (9, 2, 1, 32, 32)
    torch.testing.assert_close(mmse, samples.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(std, samples.std(0), rtol=1e-4, atol=1e-6)
    assert torch.all(std > 0)


def test_batch_items_are_independent_of_their_neighbours(model):
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        together = _sampler(model, n_samples=4).reduce(x)[0]
        alone = _sampler(model, n_samples=4).reduce(x[1:2])[0]
    torch.testing.assert_close(together[1:2], alone, rtol=1e-5, atol=1e-6)


def test_seed_decides_the_result(model):
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        a = _sampler(model, n_samples=3, seed=1).reduce(x)[0]
        b = _sampler(model, n_samples=3, seed=1).reduce(x)[0]
        c = _sampler(model, n_samples=3, seed=2).reduce(x)[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("outputs", list(OUTPUT_WRAPPERS))
def test_scripted_equals_eager(model, outputs, tmp_path):
    wrapper = OUTPUT_WRAPPERS[outputs](_sampler(model, n_samples=5, sample_batch=2, seed=4,
                                                keep_samples="samples" in outputs)).eval()
    scripted = torch.jit.script(wrapper)
    path = tmp_path / "m.pt"
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    x = torch.randn(2, 1, 32, 48)
    with torch.no_grad():
        eager, script = wrapper(x), loaded(x)
    eager = eager if isinstance(eager, tuple) else (eager,)
    script = script if isinstance(script, tuple) else (script,)
    assert len(eager) == len(script) == len(outputs)
    for e, s in zip(eager, script):
        torch.testing.assert_close(e, s, rtol=1e-5, atol=1e-6)
    if "samples" in outputs:
        assert script[2].shape == (2, 5, 1, 32, 48)
